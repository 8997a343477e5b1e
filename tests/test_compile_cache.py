"""The CLI's persistent compilation cache: where it goes, how it is turned off, and that a second
process really loads a program from it instead of compiling."""
import os
import subprocess
import sys
import textwrap

import jax

from jaxsr import compile_cache


def test_folder_choice_and_off_switch(tmp_path, monkeypatch):
    before = jax.config.jax_compilation_cache_dir
    try:
        monkeypatch.setenv("JAXSR_COMPILATION_CACHE", "0")
        assert compile_cache.enable() is None
        monkeypatch.delenv("JAXSR_COMPILATION_CACHE")
        monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert compile_cache.enable() == str(tmp_path / "xdg" / "jaxsr" / "xla")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xdg" / "jaxsr" / "xla")
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
        assert compile_cache.enable() == str(tmp_path / "mine")
        (tmp_path / "file").write_text("x")
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "file" / "sub"))
        assert compile_cache.enable() is None          # cannot create: compile as usual
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_second_process_loads_the_program_from_disk(tmp_path):
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp
        from jaxsr import compile_cache
        events = []
        jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
        compile_cache.enable(min_compile_seconds=0.0)
        f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum() * 3.0 + 1.25)
        print(float(f(jnp.ones((8, 8)))))
        print(events.count("/jax/compilation_cache/cache_hits"),
              events.count("/jax/compilation_cache/cache_misses"))
    """)
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "c"))
    env.pop("JAXSR_COMPILATION_CACHE", None)
    outs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                           text=True, check=True).stdout for _ in range(2)]
    (value0, counts0), (value1, counts1) = (o.split("\n")[:2] for o in outs)
    assert value0 == value1 == "193.25"          # 64 entries of tanh(8) ~ 1, x 3, + 1.25
    hits0, misses0 = map(int, counts0.split())
    hits1, misses1 = map(int, counts1.split())
    assert hits0 == 0 and misses0 >= 1            # first process: compiled and stored
    assert hits1 == misses0 and misses1 == 0      # second: every program loaded from disk
    assert any((tmp_path / "c").iterdir())
