"""The faces of Fig. 3: the conv EAE at a hot and a cold temperature."""
