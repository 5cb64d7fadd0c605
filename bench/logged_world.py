"""A logged run of one world of the family kept on disk, for `brein policy tune` to work on.

    python -m bench.logged_world 101 --days 120 --decisions 20000 --out runs/g101

Brein serves the world in process with the config its generator writes (the joiner and the online
learner as in ``bench.learning``); the store and that config stay in ``--out`` (brein.db,
brein.toml), so `brein policy tune --config runs/g101/brein.toml --cut ...` tunes on its log.
Choosing seeds only (``policies.simulation.family.CHOOSING_SEEDS``): tuning is choosing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import tomli_w

from bandit.config import parse_config
from policies.simulation.family import CHOOSING_SEEDS, customers_for, member
from policies.simulation.harness import run
from serving.simulate import InProcessDriver


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seed", type=int, help="A choosing seed of the family.")
    parser.add_argument("--days", type=float, default=120.0)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--out", type=Path, required=True, help="A new folder for brein.db and brein.toml.")
    args = parser.parse_args(argv)
    if args.seed not in CHOOSING_SEEDS:
        parser.error(f"seed: expected a choosing seed ({min(CHOOSING_SEEDS)}-{max(CHOOSING_SEEDS)}), got {args.seed}")
    args.out.mkdir(parents=True, exist_ok=False)
    world_member = member(args.seed)
    data = world_member.config_data()
    data.setdefault("server", {})["store"] = str((args.out / "brein.db").resolve())
    config = parse_config(data, source=f"g{args.seed} config")
    (args.out / "brein.toml").write_text(tomli_w.dumps(data))
    world = world_member.world(config, customers_for(world_member, args.decisions, args.days), world_member.evaluated_draw)
    driver = InProcessDriver(config, args.out)
    try:
        result = run(world, driver, args.days, seed=world_member.seed)
        driver.worker.round()
    finally:
        driver.close()
    print(f"{len(result.times):,} decisions logged in {args.out / 'brein.db'}")


if __name__ == "__main__":
    main()
