"""genzoo.evaluation: one harness that scores every family alike.

    harness.py           evaluate_images / evaluate_run / evaluate_reconstruction, the in-loop FD
    metrics.py           FD / FID, KID, precision-recall, class score on feature arrays
    classifier.py        the shipped domain classifiers (FD-<name> features), train_classifier.py trains them
    inception.py         the standard FID Inception, offline
    runlog.py            a run's metrics.jsonl and the one definition of training images/s
    grid.py, report.py   sample grids; the comparison report (HTML, Markdown, JSON, plots)
"""
