"""Join two dataset stores of the same particles into one training store of pairs.

The sixth look (docs/benchmarks.md) trains on the same particles simulated twice: with a static
lattice and with frozen-phonon thermal diffuse scattering (TDS). Both stores come from
`hrtem3d simulate` with the same seed and particle settings (so structure k is the same particle in
both); this copies every complete structure of the TDS store, and every static structure
(`frozen_phonons == 0`) of the other store under index `offset + k`, into a new store that
`hrtem3d train` and `hrtem3d calibrate` read as any other. The settings are the TDS store's, with
the static store's path recorded under `paired_with`.

    python benchmarks/pair_store.py /work/data/train.zarr /work/data/train_rt.zarr /work/data/train_mix.zarr
    python benchmarks/pair_store.py ... --balanced     # as many TDS structures as static ones, twins first
    python benchmarks/pair_store.py ... --tds-per-static 0.5   # half as many TDS structures as static ones
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import zarr

from hrtem3d.data import store


def pair_stores(static: Path, tds: Path, out: Path, *, offset: int = 1000,
                balanced: bool = False, tds_per_static: float | None = None) -> tuple[int, int]:
    """Write `out` from the TDS store and the static structures of `static`; returns (n_tds, n_static).

    `balanced` keeps only as many TDS structures as there are static ones, the twins of the static
    particles first, so that neither kind of image outweighs the other in training; `tds_per_static`
    keeps that many TDS structures per static one (1.0 is `balanced`), which sets the prior of a vibrating
    lattice that the network learns (docs/benchmarks.md, "Tenth look").
    """
    if out.exists():
        raise SystemExit(f"{out} exists; remove it or choose another output path")
    a, b = store.open_store(static), store.open_store(tds)
    if max(store.completed(b), default=-1) >= offset:
        raise SystemExit(f"{tds} has structures at index {offset} and above; pass a larger --offset")
    static_idx = {int(g.attrs["index"]) for g in store.structure_groups(a)
                  if int(g.attrs["params"].get("frozen_phonons", 0)) == 0}
    if not static_idx:
        raise SystemExit(f"{static} holds no static-lattice structures (all have frozen phonons)")
    tds_idx = sorted(store.completed(b), key=lambda k: (k not in static_idx, k))
    if balanced or tds_per_static is not None:
        ratio = 1.0 if tds_per_static is None else tds_per_static
        tds_idx = sorted(tds_idx[:round(ratio * len(static_idx))])
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(tds, tmp, ignore=shutil.ignore_patterns("s[0-9]*"))  # root, films, structures/zarr.json
    for k in tds_idx:
        name = store.structure_name(k)
        shutil.copytree(tds / "structures" / name, tmp / "structures" / name)
    root = zarr.open_group(tmp, mode="r+")
    for i in sorted(static_idx):
        k = offset + i
        shutil.copytree(static / "structures" / store.structure_name(i), tmp / "structures" / store.structure_name(k))
        root["structures"][store.structure_name(k)].attrs["index"] = k
    settings = dict(root.attrs["settings"])
    settings["paired_with"] = {"static_store": str(static), "index_offset": offset, "balanced": balanced,
                               "tds_per_static": tds_per_static}
    root.attrs["settings"] = settings
    tmp.rename(out)
    return len(tds_idx), len(static_idx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("static", type=Path, help="store whose static-lattice structures are taken")
    ap.add_argument("tds", type=Path, help="store of the same particles with frozen phonons (all taken)")
    ap.add_argument("out", type=Path, help="new store")
    ap.add_argument("--offset", type=int, default=1000, help="index offset of the static structures")
    ap.add_argument("--balanced", action="store_true", help="as many TDS structures as static ones, twins first")
    ap.add_argument("--tds-per-static", type=float, default=None,
                    help="TDS structures kept per static one, twins first (1.0 = --balanced)")
    args = ap.parse_args()
    n_tds, n_static = pair_stores(args.static, args.tds, args.out, offset=args.offset, balanced=args.balanced,
                                  tds_per_static=args.tds_per_static)
    print(f"wrote {args.out}: {n_tds} structures with TDS, {n_static} static")


if __name__ == "__main__":
    main()
