"""Everything that reports: metrics, the results ledger, tables, plots, the HTML report, sweeps."""
