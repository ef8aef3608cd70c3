"""SINDy-EAE: library, Jacobian–vector products, least squares, loss, stages."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from eae import sindy
from eae.models import mlp_decoder, mlp_encoder
from helpers import config_section

SPEC_TERMS = ["z1", "z2", "z1^2", "z1 z2", "z2^2", "z1^3", "z1^2 z2", "z1 z2^2", "z2^3",
              "sin(z1)", "sin(z2)"]


# -- library -----------------------------------------------------------------------------


def test_library_names_are_the_spec_terms_in_order():
    assert sindy.library_names() == SPEC_TERMS
    assert sindy.library_names(3)[:3] == ["z1", "z2", "z3"]
    assert "z1 z2 z3" in sindy.library_names(3)
    assert len(sindy.library_names(3)) == 3 + 6 + 10 + 3


def test_library_values_match_the_terms():
    z = np.random.default_rng(0).normal(size=(7, 2))
    z1, z2 = z[:, 0], z[:, 1]
    expected = np.stack([z1, z2, z1**2, z1 * z2, z2**2, z1**3, z1**2 * z2, z1 * z2**2, z2**3,
                         np.sin(z1), np.sin(z2)], 1)
    assert np.allclose(sindy.sindy_library_np(z), expected)
    assert np.allclose(sindy.sindy_library(tf.constant(z)).numpy(), expected)
    assert sindy.sindy_library_np(z[0]).shape == (11,)  # a single state (ODE right-hand side)


# -- Jacobian–vector products ---------------------------------------------------------------


def _tiny_models(n_pixels=6, hidden=5, seed=0):
    enc = mlp_encoder(n_pixels, [hidden], 2, activation="elu", seed=seed)
    dec = mlp_decoder(2, [hidden], n_pixels, activation="elu", output_activation="linear",
                      seed=seed)
    return enc, dec


def test_encoder_jvp_equals_the_explicit_jacobian_product():
    enc, _ = _tiny_models()
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(4, 6)).astype(np.float32))
    x_dot = tf.constant(rng.normal(size=(4, 6)).astype(np.float32))
    z, z_dot = sindy.jvp(enc, x, x_dot)
    with tf.GradientTape() as tape:
        tape.watch(x)
        z2 = enc(x)
    jac = tape.batch_jacobian(z2, x)  # [batch, latent, pixel]
    assert np.allclose(z.numpy(), z2.numpy())
    assert np.allclose(z_dot.numpy(), np.einsum("blp,bp->bl", jac.numpy(), x_dot.numpy()),
                       atol=1e-6)
    # and a central finite difference along x_dot
    eps = 1e-3
    fd = (enc(x + eps * x_dot) - enc(x - eps * x_dot)).numpy() / (2 * eps)
    assert np.allclose(z_dot.numpy(), fd, atol=1e-3)


def _accumulator_jvp(fn, x, tangent):
    with tf.autodiff.ForwardAccumulator(primals=x, tangents=tangent) as acc:
        y = fn(x)
    return y.numpy(), acc.jvp(y).numpy()


def test_written_out_forward_mode_equals_the_forward_accumulator():
    """sindy.jvp takes eae.chains.dense_jvp for Dense stacks (faster on CPU): the same
    numbers as ForwardAccumulator for the encoder, the linear-output decoder, a chain
    encoder's chain-major batch and its shared-input form, and their gradients."""
    from eae.chains import ChainEncoder

    enc, dec = _tiny_models()
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(4, 6)).astype(np.float32))
    x_dot = tf.constant(rng.normal(size=(4, 6)).astype(np.float32))
    for model, inp, tangent in ((enc, x, x_dot), (dec, x[:, :2], x_dot[:, :2])):
        y, y_dot = sindy.jvp(model, inp, tangent)
        y_ref, y_dot_ref = _accumulator_jvp(lambda v: model(v, training=False), inp, tangent)
        np.testing.assert_allclose(y.numpy(), y_ref, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(y_dot.numpy(), y_dot_ref, rtol=1e-5, atol=1e-6)
    chains = ChainEncoder([_tiny_models(seed=s)[0] for s in (0, 1, 2)])
    xs = tf.concat([x, 2 * x, -x], 0)  # chain-major: chain c sees its own rows
    z, z_dot = chains.jvp(xs, tf.concat([x_dot] * 3, 0))
    z_ref, z_dot_ref = _accumulator_jvp(chains, xs, tf.concat([x_dot] * 3, 0))
    np.testing.assert_allclose(z.numpy(), z_ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(z_dot.numpy(), z_dot_ref, rtol=1e-5, atol=1e-6)
    z, z_dot = sindy.encode_each_jvp(chains, x, x_dot)
    z_ref, z_dot_ref = _accumulator_jvp(chains.encode_each, x, x_dot)
    assert z.shape == (3, 4, 2)
    np.testing.assert_allclose(z_dot.numpy(), z_dot_ref, rtol=1e-5, atol=1e-6)

    def grads(jvp_fn):
        with tf.GradientTape() as tape:
            _, z_dot = jvp_fn()
            total = tf.reduce_sum(tf.square(z_dot))
        return tape.gradient(total, chains.trainable_variables,
                             unconnected_gradients=tf.UnconnectedGradients.ZERO)

    written = grads(lambda: chains.encode_each_jvp(x, x_dot))
    reference = grads(lambda: (None, tf.convert_to_tensor(_accumulator_tensor(chains, x, x_dot))))
    for a, b in zip(written, reference):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


def _accumulator_tensor(chains, x, x_dot):
    with tf.autodiff.ForwardAccumulator(primals=x, tangents=x_dot) as acc:
        z = chains.encode_each(x)
    return acc.jvp(z)


# -- least squares ----------------------------------------------------------------------------


def test_least_squares_recovers_known_coefficients_exactly():
    rng = np.random.default_rng(2)
    z = rng.uniform(-2, 2, size=(300, 2))
    xi_true = np.zeros((11, 2))
    xi_true[1, 0], xi_true[0, 1] = -0.85, 0.97  # ż1 = −0.85 z2, ż2 = 0.97 z1
    xi_true[5, 0], xi_true[9, 1] = 0.2, -0.4
    z_dot = sindy.sindy_library_np(z) @ xi_true
    xi = sindy.least_squares(tf.constant(sindy.sindy_library_np(z)), tf.constant(z_dot))
    assert np.allclose(xi.numpy(), xi_true, atol=1e-9)
    # float32 inputs: still recovered (the solve is float64), to float32 accuracy
    xi32 = sindy.least_squares(tf.constant(sindy.sindy_library_np(z), tf.float32),
                               tf.constant(z_dot, tf.float32))
    assert xi32.dtype == tf.float32 and np.allclose(xi32.numpy(), xi_true, atol=2e-3)
    # a ridge term shrinks the solution
    xi_r = sindy.least_squares(tf.constant(sindy.sindy_library_np(z)), tf.constant(z_dot), 0.1)
    assert np.linalg.norm(xi_r.numpy()) < np.linalg.norm(xi_true)


def test_least_squares_survives_a_zero_column():
    z = np.zeros((20, 2))
    z[:, 0] = np.linspace(-1, 1, 20)  # z2 ≡ 0: its columns vanish
    theta = tf.constant(sindy.sindy_library_np(z))
    xi = sindy.least_squares(theta, tf.constant(np.stack([z[:, 0], z[:, 0]], 1)), ridge=1e-6)
    assert np.all(np.isfinite(xi.numpy()))


def _elliptic_orbit_library(z_noise: float, n: int = 600, noise: float = 1e-3):
    """Θ and ż of an off-centre elliptic orbit (the shape of the RD latents): on an exact
    ellipse the 11-term library is rank-deficient (z times the ellipse's quadratic is
    a combination of library terms), so ``z_noise`` sets how ill-conditioned it is
    (column-normalised condition number ≈ 2.4e8 at 1e-7, 2.4e6 at 1e-5)."""
    t = np.linspace(0, 30, n)
    w = 0.91
    z = np.stack([2 + 1.3 * np.cos(w * t), -1 + np.sin(w * t)], 1)
    z = z + z_noise * np.random.default_rng(1).normal(size=z.shape)
    z_dot = np.stack([-1.3 * w * np.sin(w * t), w * np.cos(w * t)], 1)
    z_dot = z_dot + noise * np.random.default_rng(0).normal(size=z_dot.shape)
    return sindy.sindy_library_np(z), z_dot


def _residual(theta, z_dot, xi):
    return float(np.sum(np.square(z_dot - theta @ np.asarray(xi, np.float64))))


@pytest.mark.parametrize("z_noise", [1e-5, 1e-7])
def test_least_squares_reaches_the_optimum_on_an_ill_conditioned_library(z_noise):
    # at 1e-7 the former normal-equations solve was 0.22 % above the optimum
    theta, z_dot = _elliptic_orbit_library(z_noise)
    scale = np.sqrt(np.mean(theta ** 2, axis=0))
    assert np.linalg.cond(theta / scale) > 1e6
    best = _residual(theta, z_dot, np.linalg.lstsq(theta, z_dot, rcond=None)[0])
    qr = sindy.least_squares(tf.constant(theta), tf.constant(z_dot)).numpy()
    assert _residual(theta, z_dot, qr) <= 1.001 * best
    svd = sindy.minimum_norm_solve(theta, z_dot)
    assert svd.rank == 11 and _residual(theta, z_dot, svd.xi) <= 1.001 * best
    assert np.allclose(svd.residual.sum() * len(theta), _residual(theta, z_dot, svd.xi))


def test_least_squares_of_float32_codes_solves_in_float64():
    theta, z_dot = _elliptic_orbit_library(1e-3, noise=1e-2)
    t32, zd32 = theta.astype(np.float32), z_dot.astype(np.float32)
    t64, zd64 = t32.astype(np.float64), zd32.astype(np.float64)
    best = _residual(t64, zd64, np.linalg.lstsq(t64, zd64, rcond=None)[0])
    xi = sindy.least_squares(tf.constant(t32), tf.constant(zd32))
    assert xi.dtype == tf.float32
    assert _residual(t64, zd64, xi.numpy()) <= 1.001 * best


@pytest.mark.parametrize("ridge", [1e-6, 1e-3, 1e-1])
def test_ridge_solves_match_lstsq_of_the_augmented_system(ridge):
    theta, z_dot = _elliptic_orbit_library(1e-5)
    n = len(theta)
    scale = np.sqrt(np.mean(theta ** 2, axis=0))
    aug = np.vstack([theta / scale / np.sqrt(n), np.sqrt(ridge) * np.eye(theta.shape[1])])
    rhs = np.vstack([z_dot / np.sqrt(n), np.zeros((theta.shape[1], 2))])
    ref = np.linalg.lstsq(aug, rhs, rcond=None)[0] / scale[:, None]
    qr = sindy.least_squares(tf.constant(theta), tf.constant(z_dot), ridge).numpy()
    svd = sindy.minimum_norm_solve(theta, z_dot, ridge).xi
    assert np.allclose(qr, ref, rtol=1e-8, atol=1e-10 * np.abs(ref).max())
    assert np.allclose(svd, ref, rtol=1e-8, atol=1e-10 * np.abs(ref).max())


def test_batched_least_squares_is_per_chain_and_differentiable():
    theta, z_dot = _elliptic_orbit_library(1e-3)
    th = tf.constant(np.stack([theta, 1.1 * theta]))
    zd = tf.constant(np.stack([z_dot, z_dot]))
    with tf.GradientTape() as tape:
        tape.watch(th)
        xi = sindy.least_squares(th, zd, 1e-3)
        total = tf.reduce_sum(tf.square(xi))
    grad = tape.gradient(total, th).numpy()
    assert xi.shape == (2, 11, 2) and np.isfinite(grad).all() and np.abs(grad).max() > 0
    one = sindy.least_squares(tf.constant(1.1 * theta), tf.constant(z_dot), 1e-3).numpy()
    assert np.allclose(xi.numpy()[1], one)


def test_minimum_norm_solve_of_a_rank_deficient_library_is_the_shortest_optimum():
    theta, z_dot = _elliptic_orbit_library(1e-3)
    dup = np.concatenate([theta, theta[:, :1]], axis=1)  # an exact copy of the z1 column
    sol = sindy.minimum_norm_solve(dup, z_dot)
    assert sol.rank == 11
    # the copy shares z1's coefficient equally (the shortest of all the optimal splits)
    assert np.allclose(sol.xi[0], sol.xi[-1])
    best = _residual(theta, z_dot, np.linalg.lstsq(theta, z_dot, rcond=None)[0])
    assert _residual(dup, z_dot, sol.xi) <= 1.001 * best


# -- the loss ----------------------------------------------------------------------------------


def _oscillator_batch(side=2, n=64, seed=0):
    """(x, x_dot) of ``n`` snapshots of the synthetic oscillator on side × side pixels."""
    ds = sindy.synthetic_oscillator(n=side, n_snapshots=n, n_test=1, n_train=n - 2, n_val=1,
                                    seed=seed)
    return ds["x"].values, ds["x_dot"].values


def test_loss_gradient_matches_finite_differences_in_float64():
    import keras

    # The global dtype policy (cached by Keras once any layer exists) decides the weights'
    # dtype; float64 makes central differences accurate to ~1e-9.
    old_floatx, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        enc, dec = _tiny_models(n_pixels=4, hidden=3, seed=3)
    finally:
        keras.config.set_dtype_policy(old_policy)
        keras.config.set_floatx(old_floatx)
    assert enc.weights[0].dtype == "float64" and dec.weights[0].dtype == "float64"
    x, x_dot = _oscillator_batch(side=2, n=40)
    batch = (tf.constant(x, tf.float64), tf.constant(x_dot, tf.float64))
    loss_fn = sindy.make_sindy_loss(1.0, 0.5, ridge=1e-4)
    variables = enc.trainable_variables + dec.trainable_variables
    with tf.GradientTape() as tape:
        loss = loss_fn(enc, dec, batch)
    grads = tape.gradient(loss, variables)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    rng = np.random.default_rng(0)
    eps = 1e-6
    # an encoder kernel (reaches the loss through z, ż, Θ, Ξ and the decoder JVP) and a
    # decoder kernel (through x̂ and ẋ̂)
    for var, grad in ((variables[0], grads[0]), (variables[-2], grads[-2])):
        idx = tuple(rng.integers(0, s) for s in var.shape)
        old_value = var.numpy()
        bumped = []
        for sign in (1, -1):
            value = old_value.copy()
            value[idx] += sign * eps
            var.assign(value)
            bumped.append(float(tf.reduce_sum(loss_fn(enc, dec, batch))))
        var.assign(old_value)
        fd = (bumped[0] - bumped[1]) / (2 * eps)
        assert grad.numpy()[idx] == pytest.approx(fd, rel=1e-4, abs=1e-9)


def test_loss_decreases_under_a_few_adam_steps():
    import keras

    enc, dec = _tiny_models(n_pixels=36, hidden=16, seed=4)
    ds = sindy.synthetic_oscillator(n=6, n_snapshots=200, n_test=20, n_train=150, n_val=30)
    batch = (tf.constant(ds["x"].values), tf.constant(ds["x_dot"].values))
    loss_fn = sindy.make_sindy_loss(1.0, 0.5, ridge=1e-3)
    variables = enc.trainable_variables + dec.trainable_variables
    opt = keras.optimizers.Adam(1e-2)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(loss_fn(enc, dec, batch))  # one chain: [1]
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))
        return loss, tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads])

    losses = []
    for _ in range(30):
        loss, gnorm = step()
        assert np.isfinite(float(loss)) and np.isfinite(float(gnorm))
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


# -- stages on a synthetic oscillator -----------------------------------------------------------

TINY_CFG = config_section("rd.eae", {
    "model": {"encoder_hidden": [32], "decoder_hidden": [32], "latent_dim": 2,
              "activation": "elu"},
    "loss": {"lambda_x": 1.0, "lambda_x_dot": 0.5, "ridge": 1e-3},
    "sampler": {"temperature": 1e-7, "dt": 0.1, "mass": 1.0, "chain_length": 10, "tau": 20.0,
                "sy_order": 1, "resample_every": 5, "initial_velocities": "gaussian",
                "thermostat": "nhc"},
    "train": {"decoder_updates": 40, "encoder_steps": 25, "batch_size": 128,
              "learning_rate": 0.01, "seed": 0, "log_every_s": 1000.0},
    "ensemble": {"members": 40, "thin": 1, "chunk_members": 16},
})


@pytest.fixture(scope="module")
def oscillator_store(tmp_path_factory):
    from eae.io import write_zarr

    path = tmp_path_factory.mktemp("osc") / "dataset.zarr"
    # A linear embedding (quadratic = 0); the test window (30 time units) spans 4 periods.
    # Over seeds 0–4 this config identifies ω within 3 % (mean model, all terms).
    write_zarr(sindy.synthetic_oscillator(n=6, n_snapshots=1000, dt=0.1, omega=0.9,
                                          n_test=300, n_train=600, n_val=100, quadratic=0.0),
               path)
    return path


@pytest.fixture(scope="module")
def trained(oscillator_store, tmp_path_factory):
    """Train the tiny config once, then sample its coefficient ensemble."""
    root = tmp_path_factory.mktemp("rd_eae")
    history = sindy.train_sindy_stage(TINY_CFG, oscillator_store, root / "model",
                                      checkpoint_dir=root / "ckpt")
    sindy.coefficients_stage(TINY_CFG, oscillator_store, root / "model",
                             root / "coefficients.zarr")
    return root, history


def test_rd_trainer_rejects_a_bad_config(oscillator_store):
    with pytest.raises(KeyError, match="sampler"):
        sindy.rd_trainer({k: v for k, v in TINY_CFG.items() if k != "sampler"}, oscillator_store)
    bad = {**TINY_CFG, "model": {**TINY_CFG["model"], "latent_dim": 3}}
    with pytest.raises(ValueError, match="latent_dim"):
        sindy.rd_trainer(bad, oscillator_store)


def test_training_writes_the_model_directory_and_lowers_the_loss(trained):
    root, history = trained
    from eae.provenance import find_record

    for name in ("encoder.keras", "decoder.keras", "final_state.npz", "history.csv"):
        assert (root / "model" / name).exists(), name
    record = find_record(root / "model")
    assert record["stage"] == "rd_train_eae" and "ensemble" not in record["config"]
    assert len(history) == TINY_CFG["train"]["decoder_updates"]
    assert history["loss_mean"].iloc[-1] < 0.2 * history["loss_mean"].iloc[0]
    ratio = history["kinetic_temperature"] / history["temperature"]
    assert ratio.iloc[-10:].between(0.8, 1.25).all()


def test_coefficient_store_layout(trained):
    from eae.io import member_view, open_zarr, read_provenance

    root, _ = trained
    raw = open_zarr(root / "coefficients.zarr")
    assert raw["coefficients"].dims == ("chain", "draw", "term", "latent")
    ds = member_view(raw)
    m = TINY_CFG["ensemble"]["members"]
    assert ds["coefficients"].dims == ("member", "term", "latent")
    assert ds["coefficients"].shape == (m, 11, 2)
    assert [str(t) for t in ds["term"].values] == SPEC_TERMS
    assert [str(t) for t in ds["latent"].values] == ["z1", "z2"]
    assert ds["latent_code"].shape == (m, 300, 2)
    assert np.allclose(ds["coefficients_mean"].values, ds["coefficients"].values.mean(0),
                       atol=1e-5)
    assert np.all(np.isfinite(ds["coefficients"].values))
    # consecutive members differ (the chain moves) but stay close
    c = ds["coefficients"].values
    assert not np.allclose(c[0], c[-1])
    assert read_provenance(ds)["stage"] == "rd_coefficients"
    # the store names its library, and the analysis reads it back
    from eae.core.sindy import SindyLibrary

    library = SindyLibrary.from_attrs(raw.attrs)
    assert library.names == [str(t) for t in ds["term"].values]


def test_end_to_end_identifies_the_oscillation_frequency(trained, oscillator_store, tmp_path):
    """Short EAE training + ensemble on the embedded oscillator (ω = 0.9): the mean
    model integrated from the first test encoding oscillates within 20 % of ω."""
    from eae.rd_analysis import rd_analysis_stage

    root, _ = trained
    outputs = {k: tmp_path / f"{k}.{ext}" for k, ext in
               (("table_csv", "csv"), ("table_md", "md"), ("fig_correlation", "png"),
                ("fig_kde", "png"), ("fig_dynamics", "png"), ("frequency", "csv"),
                ("identifiability", "md"), ("sensitivity", "csv"), ("vs_paper", "md"))}
    rd_analysis_stage({}, root / "coefficients.zarr", oscillator_store, outputs)
    freq = pd.read_csv(outputs["frequency"])
    assert freq.loc[0, "omega"] == pytest.approx(0.9, rel=0.01)  # the data themselves
    omega = freq.set_index(["source", "method"])["omega"]
    integrated = omega[("mean model (all terms)", "integrated trajectory, sinusoid fit")]
    assert integrated == pytest.approx(0.9, rel=0.2)


def test_training_resumes_and_discards_a_foreign_checkpoint(oscillator_store, tmp_path):
    cfg = {**TINY_CFG, "train": {**TINY_CFG["train"], "decoder_updates": 3, "encoder_steps": 5}}
    ckpt = tmp_path / "ckpt"
    sindy.train_sindy_stage(cfg, oscillator_store, tmp_path / "a", checkpoint_dir=ckpt,
                            stop_after=2)
    assert not (tmp_path / "a" / "final_state.npz").exists()  # not before the last update
    full = sindy.train_sindy_stage(cfg, oscillator_store, tmp_path / "a", checkpoint_dir=ckpt)
    straight = sindy.train_sindy_stage(cfg, oscillator_store, tmp_path / "b",
                                       checkpoint_dir=tmp_path / "ckpt_b")
    assert np.allclose(full["loss_mean"], straight["loss_mean"], rtol=0, atol=0)
    # another seed: the old checkpoint (3 updates done) must not be reused
    other = {**cfg, "train": {**cfg["train"], "seed": 1}}
    hist = sindy.train_sindy_stage(other, oscillator_store, tmp_path / "c", checkpoint_dir=ckpt)
    assert len(hist) == 3 and not np.allclose(hist["loss_mean"], full["loss_mean"])


# -- the library object --------------------------------------------------------------------


def test_library_object_names_evaluates_prints_and_round_trips():
    from eae.core.sindy import SindyLibrary

    lib = SindyLibrary()
    assert lib.names == sindy.library_names(2) and lib.n_terms == 11
    z = np.random.default_rng(4).normal(size=(7, 2))
    np.testing.assert_array_equal(lib.numpy(z), sindy.sindy_library_np(z))
    np.testing.assert_allclose(lib(tf.constant(z)).numpy(), lib.numpy(z), rtol=1e-12)
    xi = np.zeros((11, 2))
    xi[1, 0], xi[10, 0], xi[0, 1] = -0.37, -0.571, 0.31
    assert lib.equations(xi) == ["dz1/dt = -0.37 z2 -0.57 sin(z2)", "dz2/dt = 0.31 z1"]
    assert "11 terms: z1, z2, z1^2" in str(lib)
    assert SindyLibrary.from_json(lib.to_json()) == lib
    shifted = SindyLibrary(constant=True, centre=(0.5, -1.0))
    assert shifted.names[0] == "1" and shifted.n_terms == 12
    back = SindyLibrary.from_attrs({"sindy_library": shifted.to_json()})
    assert back == shifted
    np.testing.assert_allclose(back.numpy(z)[:, 1:], sindy.sindy_library_np(z - [0.5, -1.0]))
    assert np.all(back.numpy(z)[:, 0] == 1.0)
    assert SindyLibrary.from_attrs({}, default=lib) is lib
    with pytest.raises(KeyError, match="sindy_library"):
        SindyLibrary.from_attrs({})
