"""Evaluation: teacher and students side by side (quality, fidelity, calibration, robustness,
efficiency, failure analysis), one report. Entry point: `report.evaluate`."""
