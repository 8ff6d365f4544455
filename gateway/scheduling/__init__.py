"""Which models run where and when: the pure scheduler (``scheduler.step``), its pure inputs
(``inputs.py``), placement on pools, release and calibration of GPU memory; ``lifecycle.py`` is
the only module here with effects."""
