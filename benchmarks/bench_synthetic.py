"""The synthetic galaxy generator's speed: galaxies/s rendered (image + votes) on one core.

Times ``zoobot.shared.synthetic.synthetic_galaxy(index, image_size=size)`` - latent draw, rendering
(maps, PSF by FFT, noise, asinh stretch to uint8 RGB) and votes down the DECaLS DR5 tree - for
``--n-galaxies`` galaxies per repetition at each size, in one process with one thread (no framework).
The reference (``shared/reference/synthetic.md``) measured about 1,150 / 480 / 175 galaxies/s at
64 / 128 / 224 px on this machine kind.

    .venv/bin/python benchmarks/bench_synthetic.py             # 1,000 galaxies at 64, 128, 224 px
    .venv/bin/python benchmarks/bench_synthetic.py --quick
"""
from __future__ import annotations

import itertools
import os
import sys

import _common as C


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = C.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--n-galaxies", type=int, default=None, help="galaxies per repetition (default 1000; quick 20)")
    parser.add_argument("--sizes", default=None, help="comma-separated image sizes (default 64,128,224; quick 32,64)")
    args = parser.parse_args(argv)
    settings = C.resolve_settings(args)
    peer = C.check_peer_python(args.peer_python)
    n = args.n_galaxies or (20 if args.quick else 1000)
    sizes = [int(v) for v in (args.sizes or ("32,64" if args.quick else "64,128,224")).split(",")]
    settings.update(n_galaxies=n, sizes=sizes, threads=1, backends=[])  # no framework is used
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = "1"  # one core (numpy/scipy FFT threads)
    from zoobot.shared.synthetic import GENERATOR_VERSION, synthetic_galaxy

    counter = itertools.count()
    results = {"generator_version": GENERATOR_VERSION}
    for size in sizes:
        def render(size=size):
            for _ in range(n):
                synthetic_galaxy(next(counter), image_size=size)
            return n

        results[str(size)] = C.measure(render, settings["repeats"], settings["warmup"])
    rows = [[f"{size} x {size}", results[str(size)], results[str(size)]["per_cpu_second"],
             1000 / results[str(size)]["median"]] for size in sizes]
    title = (f"Synthetic generator ({GENERATOR_VERSION}): {n} galaxies per repetition, one process, one thread "
             "(galaxies/s, median (min-max))")
    tables = {title: C.markdown_table(["size", "galaxies/s", "galaxies per CPU-second", "ms per galaxy"], rows)}
    notes = ["synthetic_galaxy(index, image_size=size): latents + render + votes down the DECaLS DR5 tree, "
             "no file written; reference: ~1,150 / 480 / 175 galaxies/s at 64 / 128 / 224 px"]
    if peer:
        results["peer"] = {"error": "upstream Zoobot has no synthetic generator"}
        notes.append("peer: upstream Zoobot has no synthetic generator")
    return C.finish(__file__, args, argv, settings, tables, results, notes)


if __name__ == "__main__":
    main()
