"""``scripts/bench --cpu``: CPU per byte and per request on a database fast enough to measure a
server by, one scenario per module (:mod:`.full`, :mod:`.small`, :mod:`.upload`), the probes
they share (:mod:`.probes`), the driver's floors (:mod:`.floors`), the contestants
(:mod:`.contestants`) and the reading of the rounds (:mod:`.summary`, pure). The runner is
``scripts/bench_cpu.py``."""
