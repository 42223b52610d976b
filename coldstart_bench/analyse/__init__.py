"""The analysing wing: statistics, comparisons, expectations, gate, baseline, noise, findings, reports."""
