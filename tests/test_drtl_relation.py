"""Distortion Relation Network, memory bank and knowledge graph (jaxsr.methods.drtl.relation).

The DRN is trained on K simple jittable distortions written here (independent of the degradation
registry) over synthetic multi-scale textures; a target batch made with ONE of those distortions
(fresh images, fresh keys) must get that distortion's top relation weight.
"""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from jaxsr.methods.drtl import graph_io, relation
from jaxsr.methods.drtl.reweight import embedding_weights

P = 32  # crop size
NAMES = ["blur", "noise", "box_down_up", "blur+noise"]
K = len(NAMES)


# --------------------------------------------------------------------------- test distortions
def _blur(img, sigma):
    """Separable Gaussian blur (radius 6, edge padding) with a traced sigma."""
    t = jnp.arange(-6, 7, dtype=jnp.float32)
    k = jnp.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    p = jnp.pad(img, ((6, 6), (6, 6), (0, 0)), mode="edge")
    p = sum(k[i] * p[i:i + P] for i in range(13))
    return sum(k[i] * p[:, i:i + P] for i in range(13))


def _distort(key, img, label):
    ks, kn = jax.random.split(key)
    u = jax.random.uniform(ks)
    # Drawn flat then reshaped: N-D threefry draws compile slowly on XLA:CPU.
    noise = jax.random.normal(kn, (img.size,)).reshape(img.shape)
    box = jnp.repeat(jnp.repeat(img.reshape(P // 4, 4, P // 4, 4, 3).mean((1, 3)), 4, 0), 4, 1)
    outs = jnp.stack([
        _blur(img, 1.5 + u),                                   # 0 blur, sigma 1.5-2.5
        img + (0.04 + 0.06 * u) * noise,                       # 1 noise, sigma 0.04-0.10
        box,                                                   # 2 4x box down, nearest up
        _blur(img, 1.2 + 0.5 * u) + 0.03 * noise,              # 3 blur then weak noise
    ])
    return jnp.clip(outs[label], 0.0, 1.0)


def _textures(seed, n):
    """n (P, P, 3) float32 textures in [0, 1]: multi-octave smooth noise, sharp rectangles."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, P, P, 3), np.float32)
    for i in range(n):
        img = np.full((P, P, 3), rng.uniform(0.3, 0.7))
        for cells in (2, 4, 8, 16, 32):
            g = rng.normal(size=(cells, cells, 3)) * rng.uniform(0.02, 0.1)
            img += ndimage.zoom(g, (P / cells, P / cells, 1), order=1, mode="nearest")
        for _ in range(rng.integers(1, 4)):
            y0, x0 = rng.integers(0, P - 4, 2)
            h, w = rng.integers(3, P // 2, 2)
            img[y0:y0 + h, x0:x0 + w] += rng.uniform(-0.3, 0.3, 3)
        out[i] = np.clip(img, 0, 1)
    return out


def _labelled(key, pool, n_per_class):
    """(K * n_per_class) distorted crops from random pool images, labels 0..K-1 (jittable)."""
    ki, kd, kf = jax.random.split(key, 3)
    n = K * n_per_class
    idx = jax.random.randint(ki, (n,), 0, pool.shape[0])
    imgs = pool[idx]
    flip = jax.random.bernoulli(kf, 0.5, (n,))
    imgs = jnp.where(flip[:, None, None, None], imgs[:, :, ::-1], imgs)
    labels = jnp.repeat(jnp.arange(K), n_per_class)
    return jax.vmap(_distort)(jax.random.split(kd, n), imgs, labels), labels


@pytest.fixture(scope="module")
def trained():
    pool = jnp.asarray(_textures(0, 192))
    model = relation.DistortionRelationNet(num_tasks=K, embed_dim=32, widths=(8, 16, 32),
                                           mlp_hidden=32)
    res = relation.train_drn(jax.random.PRNGKey(0), lambda k: _labelled(k, pool, 8), 200,
                             model=model, learning_rate=3e-3, logit_scale=16.0)
    return res


def test_drn_classifies_held_out_distortions(trained):
    held_out = jnp.asarray(_textures(1, 64))  # images never seen in training
    images, labels = jax.jit(lambda k: _labelled(k, held_out, 32))(jax.random.PRNGKey(123))
    acc = float(jax.jit(functools.partial(relation.drn_accuracy, trained.model))(
        trained.params, images, labels))
    first = float(jnp.mean(trained.losses[:10]))
    last = float(jnp.mean(trained.losses[-10:]))
    print(f"DRN held-out accuracy {acc:.3f} (chance {1 / K:.2f}); train loss {first:.3f} -> "
          f"{last:.3f}")
    assert acc > 0.8
    assert last < 0.5 * first


def test_target_from_one_aux_distortion_gets_top_weight(trained, tmp_path):
    held_out = jnp.asarray(_textures(2, 32))  # fresh images

    @jax.jit
    def graph_for(key, label):
        # Target batch: every crop made with the SAME auxiliary distortion `label`, fresh keys.
        target = jax.vmap(lambda kk, im: _distort(kk, im, label))(jax.random.split(key, 32),
                                                                  held_out)
        return relation.knowledge_graph(trained.model, trained.params, target)

    tops = []
    for k in range(K):
        graph = graph_for(jax.random.PRNGKey(1000 + k), k)
        w = embedding_weights(graph["target_aux"], tau=0.1)
        tops.append(float(w[k]))
        print(f"target={NAMES[k]}: cos to bank {np.round(np.asarray(graph['target_aux']), 3)}, "
              f"weights {np.round(np.asarray(w), 3)}")
        assert int(jnp.argmax(w)) == k
    # Graph invariants: unit diagonal, symmetric, cosines in [-1, 1].
    aa = np.asarray(graph["aux_aux"])
    np.testing.assert_allclose(np.diag(aa), 1.0, atol=1e-5)
    np.testing.assert_allclose(aa, aa.T, atol=1e-6)
    assert np.all(np.abs(aa) <= 1 + 1e-6)
    # Saved graph: JSON round trip and a real PNG.
    w = embedding_weights(graph["target_aux"], tau=0.1)
    graph_io.save_graph(tmp_path / "g.json", tmp_path / "g.png", graph, NAMES, w, tau=0.1,
                        mode="embedding")
    back = graph_io.load_graph(tmp_path / "g.json")
    np.testing.assert_allclose(back["aux_aux"], aa, rtol=1e-6)
    assert Image.open(tmp_path / "g.png").size[0] >= 300


def test_prototype_logits_and_loss_hand_check():
    emb = jnp.array([[3.0, 4.0], [0.0, -2.0]])
    bank = jnp.array([[1.0, 0.0], [0.0, 5.0], [-1.0, -1.0]])
    logits = relation.prototype_logits(emb, bank, 10.0)
    # cos: e0=(.6,.8), e1=(0,-1); bank rows (1,0), (0,1), (-1,-1)/sqrt2
    ref = 10.0 * np.array([[0.6, 0.8, -1.4 / np.sqrt(2)], [0.0, -1.0, 1 / np.sqrt(2)]])
    np.testing.assert_allclose(logits, ref, rtol=1e-6)
    # drn_loss = mean cross-entropy of those logits (numpy log-softmax reference).
    model = relation.DistortionRelationNet(num_tasks=3, embed_dim=8, widths=(4,), mlp_hidden=8)
    params = relation.init_drn(jax.random.PRNGKey(0), model, (1, 16, 16, 3))
    x = jnp.asarray(np.random.default_rng(1).uniform(size=(5, 16, 16, 3)), jnp.float32)
    labels = jnp.array([0, 1, 2, 1, 0])
    e = np.asarray(jax.jit(functools.partial(relation.embed, model))(params, x), np.float64)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    b = np.asarray(relation.memory_bank(params), np.float64)
    z = 16.0 * e @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    ref_loss = np.mean(lse - z[np.arange(5), np.asarray(labels)])
    loss = jax.jit(functools.partial(relation.drn_loss, model))(params, x, labels, 16.0)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    # Target embedding = normalised mean embedding.
    t = np.asarray(jax.jit(functools.partial(relation.target_embedding, model))(params, x))
    np.testing.assert_allclose(t, e.mean(0) / np.linalg.norm(e.mean(0)), rtol=1e-5, atol=1e-6)


def test_preprocess_modes():
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 16, 16, 3)), jnp.float32)
    pre = jax.jit(relation.preprocess, static_argnames=("mode", "eps"))
    assert pre(x, mode="both").shape == (2, 16, 16, 6)
    np.testing.assert_allclose(jnp.mean(pre(x, mode="normalize"), axis=(1, 2)), 0.0, atol=1e-5)
    # Highpass of a constant image is zero; a brightness shift leaves it unchanged.
    np.testing.assert_allclose(pre(jnp.full((2, 16, 16, 3), 0.3), mode="highpass"), 0.0,
                               atol=1e-6)
    np.testing.assert_allclose(pre(x * 0.5 + 0.2, mode="highpass"), pre(x * 0.5, mode="highpass"),
                               atol=1e-5)
    # Highpass = gain * (x - Gaussian blur), blur checked against scipy (reflect = 'mirror').
    blur = ndimage.gaussian_filter(np.asarray(x, np.float64), sigma=(0, 1.0, 1.0, 0), truncate=3.0,
                                   mode="mirror")
    np.testing.assert_allclose(pre(x, mode="highpass"), 4.0 * (np.asarray(x) - blur), atol=1e-5)
    # Normalisation removes brightness and contrast of the content.
    np.testing.assert_allclose(pre(0.5 * x + 0.25, mode="normalize", eps=0.0),
                               pre(x, mode="normalize", eps=0.0), atol=1e-4)
    with pytest.raises(ValueError, match="input_mode='sobel'"):
        relation.preprocess(x, "sobel")


def test_random_crops_are_windows_of_the_image():
    img = jnp.arange(20 * 24 * 3, dtype=jnp.float32).reshape(20, 24, 3)
    crops = np.asarray(relation.random_crops(jax.random.PRNGKey(0), img, 8, 5))
    assert crops.shape == (5, 8, 8, 3)
    a = np.asarray(img)
    for c in crops:
        y, x = divmod(int(c[0, 0, 0]) // 3, 24)
        np.testing.assert_array_equal(c, a[y:y + 8, x:x + 8])
    with pytest.raises(ValueError, match="crop size 32"):
        relation.random_crops(jax.random.PRNGKey(0), img, 32, 1)


def test_graph_json_round_trip_and_heatmap_png(tmp_path):
    aux = np.array([[1.0, 0.25, -0.5], [0.25, 1.0, 0.125], [-0.5, 0.125, 1.0]])
    tgt = np.array([0.75, -0.25, 0.0625])
    w = np.array([0.7, 0.2, 0.1])
    names = ["gaussian_blur", "gaussian_noise", "jpeg"]
    graph = {"aux_aux": jnp.asarray(aux, jnp.float32), "target_aux": jnp.asarray(tgt, jnp.float32),
             "target_embedding": jnp.ones(4)}
    written = graph_io.save_graph(tmp_path / "sub" / "graph.json", tmp_path / "graph.png", graph,
                                  names, w, tau=0.1, mode="embedding", target_name="city100")
    raw = json.loads((tmp_path / "sub" / "graph.json").read_text())
    assert raw == written
    assert raw["task_names"] == names and raw["target_name"] == "city100"
    assert raw["tau"] == 0.1 and raw["mode"] == "embedding"
    back = graph_io.load_graph(tmp_path / "sub" / "graph.json")
    np.testing.assert_allclose(back["aux_aux"], aux, rtol=1e-7)   # values exact in float32
    np.testing.assert_allclose(back["target_aux"], tgt, rtol=1e-7)
    np.testing.assert_allclose(back["weights"], w, rtol=1e-12)
    # (K+1)x(K+1) matrix shown in the heatmap: aux block, target row/col, unit corner.
    m = graph_io.graph_matrix(back["aux_aux"], back["target_aux"])
    ref = np.ones((4, 4))
    ref[:3, :3] = aux
    ref[3, :3] = ref[:3, 3] = tgt
    np.testing.assert_allclose(m, ref)
    # The PNG is a real image of sensible size (labels, colorbar, annotations fit).
    png = tmp_path / "graph.png"
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        assert im.format == "PNG"
        assert 300 <= im.size[0] <= 2000 and 300 <= im.size[1] <= 2000
        arr = np.asarray(im.convert("RGB"))
    assert arr.std() > 10  # not a blank canvas
    # Graph without weights / PNG path also works; mismatched names fail with a clear message.
    graph_io.save_graph(tmp_path / "g2.json", None, graph, names)
    assert graph_io.load_graph(tmp_path / "g2.json")["weights"] is None
    with pytest.raises(ValueError, match="2 task names"):
        graph_io.save_graph(tmp_path / "g3.json", None, graph, names[:2])
    with pytest.raises(ValueError, match="cannot read"):
        graph_io.load_graph(tmp_path / "missing.json")


def test_train_drn_scan_chunks_match_python_loop():
    """steps_per_call > 1 (lax.scan chunks) = the per-step Python loop; given params survive."""
    pool = jnp.asarray(_textures(3, 16))
    model = relation.DistortionRelationNet(num_tasks=K, embed_dim=8, widths=(4, 8), mlp_hidden=8)
    sample = lambda k: _labelled(k, pool, 2)
    params0 = relation.init_drn(jax.random.key(4), model, (1, P, P, 3))
    a = relation.train_drn(jax.random.key(5), sample, 4, model=model, learning_rate=1e-2,
                           params=params0)
    b = relation.train_drn(jax.random.key(5), sample, 4, model=model, learning_rate=1e-2,
                           steps_per_call=2, params=params0)
    assert a.losses.shape == b.losses.shape == (4,)
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-4, atol=1e-5)
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    # The caller's params were not donated away, and training moved them.
    assert not any(x.is_deleted() for x in jax.tree_util.tree_leaves(params0))
    assert float(relation.memory_bank(a.params)[0, 0]) != float(relation.memory_bank(params0)[0, 0])


@pytest.mark.slow
def test_drn_on_bsd100_with_registry_distortions(shared_data):
    """Real HR crops (BSD100) + the degradation registry: the target built with one registered
    distortion gets that distortion's top embedding weight."""
    from jaxsr.degradations import tasks as dtasks
    from jaxsr.imageio import list_images, read_image

    names = ["bicubic", "gaussian_noise", "jpeg", "motion_blur"]
    files = list_images(shared_data / "bsd100" / "hr")
    if len(files) < 40:
        pytest.skip("BSD100 HR images not found under shared data")
    rng = np.random.default_rng(0)
    crops = []
    for f in files[:40]:
        img = read_image(f)
        for _ in range(4):
            y, x = rng.integers(0, img.shape[0] - 64), rng.integers(0, img.shape[1] - 64)
            crops.append(img[y:y + 64, x:x + 64])
    crops = jnp.asarray(np.stack(crops), jnp.float32) / 255.0
    train_pool, test_pool = crops[:128], crops[128:]   # different images
    nk = len(names)

    def sample(key, pool=train_pool, per_task=8):
        ki, ks = jax.random.split(key)
        hr = pool[jax.random.randint(ki, (nk, per_task), 0, pool.shape[0])]
        lr = dtasks.synthesize_tasks(names, ks, hr, 2, "down")       # (K, B, 32, 32, 3)
        return lr.reshape((-1,) + lr.shape[2:]), jnp.repeat(jnp.arange(nk), per_task)

    model = relation.DistortionRelationNet(num_tasks=nk, embed_dim=32, widths=(16, 32, 64),
                                           mlp_hidden=64)
    res = relation.train_drn(jax.random.key(0), sample, 400, model=model, learning_rate=2e-3)
    images, labels = jax.jit(lambda k: sample(k, test_pool, 16))(jax.random.key(1))
    acc = float(relation.drn_accuracy(model, res.params, images, labels))
    print(f"BSD100 + registry DRN held-out accuracy {acc:.3f} (chance {1 / nk:.2f})")
    assert acc > 0.7
    for k, name in enumerate(names):
        lr = dtasks.synthesize(name, jax.random.key(100 + k), test_pool, 2, "down")
        graph = relation.knowledge_graph(model, res.params, lr)
        w = embedding_weights(graph["target_aux"], tau=0.1)
        print(f"target={name}: weights {np.round(np.asarray(w), 3)}")
        assert int(jnp.argmax(w)) == k
