"""Reports on compression results.

Modules: ``records`` (a trial summary and where it came from), ``sources`` (reading them from folders and
MLflow searches), ``table`` (the Table-2 style ratio table), ``pareto`` (the Pareto front), ``plots`` (PNGs),
``front_plot`` (a multi-objective search's front, score against each other objective).
"""
