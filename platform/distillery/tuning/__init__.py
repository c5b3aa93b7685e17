"""Ray Tune search of distillation hyper-parameters: `distillery tune`.

`space` (pure) checks a search space against the spec and builds trial specs; `results` (pure)
turns trial rows into the table, Pareto set, best.yaml and plot; `search` runs the Tuner.
"""
