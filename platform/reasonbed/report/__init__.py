"""Reports and dashboards of a sweep.

- `reasonbed.report.build.build_report(sweep_uri, out_dir)`: report.md, a self-contained report.html
  with plots, results.tex (the results tables in LaTeX) and trials.csv / trials.parquet in a local folder;
  `publish_report(sweep_uri)` writes them next to the sweep, in its storage (`python -m reasonbed report RUN`).
- `reasonbed.report.dashboard.run_dashboard(...)`: optuna-dashboard on the sweep's Optuna storage and
  TensorBoard on the sweep folder, bound to 127.0.0.1 (`python -m reasonbed dashboard RUN`).

Submodules are imported on use: the dashboard does not need matplotlib or pandas.
"""
