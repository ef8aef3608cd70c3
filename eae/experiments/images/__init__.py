"""MNIST and Frey Faces: data, the EAE, VAE/AE baselines, Table 1 and figures."""
