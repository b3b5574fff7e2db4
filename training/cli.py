"""``train``: the training package's commands in one place.

    train run training/configs/tiny.yaml [-o key=value ...]       # = python -m training.train
    train ray training/configs/tiny.yaml --workers 2               # Ray Train launcher
    train cmr fit RUN_LOGS... --general G --domain D --out fit.json
    train cmr predict fit.json --tokens 2e9 --mixture mix.json
    train cmr sweep CONFIG --general G --domain D --ratios 0.125,0.25,0.5 --out DIR
    train skills-graph linear CONFIG --skills a,b,c --steps 20 --out graph.json
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {"run", "ray", "cmr", "skills-graph"}
    if not args or args[0] not in commands:
        print(__doc__)
        raise SystemExit(0 if args and args[0] in ("-h", "--help") else 2)
    cmd, rest = args[0], args[1:]
    if cmd == "run":
        from training.train import main as run

        run(rest)
    elif cmd == "ray":
        from training import ray_launch

        sys.argv = ["train ray", *rest]
        ray_launch.main()
    elif cmd == "cmr":
        from training.cmr import main as cmr

        cmr(rest)
    else:
        from training.skills_graph import main as graph

        graph(rest)


if __name__ == "__main__":
    main()
