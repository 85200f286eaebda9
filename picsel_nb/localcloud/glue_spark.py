"""How the embedded cloud runs a ``glueetl`` job's script: ``spark-submit`` on Apache Spark, locally.

Glue 5.0 runs Spark 3.5.4 on Java 17; here pyspark (pinned to that line) and the machine's Java
run the script in client mode on master ``local[N]``: N is the run's task slots as Glue would give
them (one worker hosts the driver, every other worker an executor with its vCPUs), capped at this
machine's cores. Everything Spark opens binds 127.0.0.1, the web UI is off (no port is left
open), scratch space and the JVM's temp dir are under the run's own directory.

Logs as Glue 5.0 writes them: the script's stdout and stderr go to ``/aws-glue/jobs/output``;
Spark's own log4j lines go to ``/aws-glue/jobs/error``, here through a pipe that log4j writes to
(``/dev/fd/N``), so the two never mix. Locally the executors live in the driver's JVM, so every
line is in the driver's stream (the run id); Glue adds one stream per executor.
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib.util import find_spec
from pathlib import Path

# vCPUs of one Glue worker of each type (Glue's "Standard" worker runs 4-core executors too).
WORKER_VCPUS = {"G.025X": 2, "G.1X": 4, "G.2X": 8, "G.4X": 16, "G.8X": 32, "Standard": 4}
DEFAULT_WORKERS = 2  # what Glue gives a glueetl job that names no capacity (10 DPUs are 2 G.1X)
LOOPBACK = "127.0.0.1"
INSTALL_HINT = ("install Java 17 (Debian: apt-get install openjdk-17-jre-headless) or point "
                "JAVA_HOME at one")
# log4j 2 as Glue's driver logs: INFO and above, one line each, to the error pipe; per-task chatter
# (two lines for every task) kept at WARN so a year's backfill does not flood the log.
LOG4J = """\
rootLogger.level = info
rootLogger.appenderRef.glue.ref = glue
appender.glue.type = File
appender.glue.name = glue
appender.glue.fileName = {path}
appender.glue.immediateFlush = true
appender.glue.layout.type = PatternLayout
appender.glue.layout.pattern = %d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: %m%n%ex
logger.tasks.name = org.apache.spark.scheduler.TaskSetManager
logger.tasks.level = warn
logger.executor.name = org.apache.spark.executor.Executor
logger.executor.level = warn
logger.jetty.name = org.sparkproject.jetty
logger.jetty.level = warn
"""


class SparkUnavailable(RuntimeError):
    """Spark cannot start here (no pyspark, no Java); the message says what is missing."""


def task_slots(worker_type: str | None, workers: int | None, cores: int | None = None) -> int:
    """The N of ``local[N]``: the executors' cores Glue would give the run, capped at ``cores``."""
    executors = max(1, (workers or DEFAULT_WORKERS) - 1)
    slots = executors * WORKER_VCPUS.get(worker_type or "G.1X", WORKER_VCPUS["G.1X"])
    return max(1, min(slots, cores or os.cpu_count() or 1))


def spark_home() -> Path:
    """pyspark's own Spark distribution (its ``bin/spark-submit`` and jars)."""
    spec = find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise SparkUnavailable("this glueetl job needs Apache Spark, but pyspark is not installed "
                               "in the embedded cloud's environment (pip install -e '.[dev]')")
    return Path(spec.origin).parent


def java_home() -> Path:
    """The Java installation Spark will use: JAVA_HOME's, else the ``java`` on PATH."""
    configured = os.environ.get("JAVA_HOME")
    found = shutil.which("java", path=str(Path(configured) / "bin")) if configured else None
    found = found or shutil.which("java")
    if found is None:
        raise SparkUnavailable(f"this glueetl job needs Apache Spark, which needs Java: no `java` "
                               f"on PATH or in JAVA_HOME; {INSTALL_HINT}")
    return Path(found).resolve().parent.parent


def environment(workdir: Path) -> dict[str, str]:
    """What spark-submit needs in its (otherwise allow-listed) environment; SparkUnavailable when
    pyspark or Java is missing."""
    return {"SPARK_HOME": str(spark_home()), "JAVA_HOME": str(java_home()),
            "SPARK_CONF_DIR": str(workdir / "spark-conf"), "SPARK_LOCAL_IP": LOOPBACK,
            "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}


def spark_conf(name: str, slots: int, workdir: Path) -> dict[str, str]:
    """The Spark configuration of a run: local[slots], loopback only, no UI, scratch in
    ``workdir``, this interpreter for the driver and the executors' Python workers."""
    scratch = workdir / "spark-local"
    scratch.mkdir(parents=True, exist_ok=True)
    return {
        "spark.master": f"local[{slots}]",
        "spark.app.name": name,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.host": LOOPBACK,
        "spark.driver.bindAddress": LOOPBACK,
        "spark.local.dir": str(scratch),
        "spark.driver.extraJavaOptions": f"-Djava.io.tmpdir={workdir}",
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }


def submit_command(script: Path, argv: list[str], *, name: str, slots: int, workdir: Path,
                   log_fd: int) -> list[str]:
    """``spark-submit`` of ``script`` with Glue's ``argv``, its log4j lines written to ``log_fd``."""
    conf_dir = workdir / "spark-conf"
    conf_dir.mkdir(exist_ok=True)
    (conf_dir / "log4j2.properties").write_text(LOG4J.format(path=f"/dev/fd/{log_fd}"))
    options = [part for key, value in spark_conf(name, slots, workdir).items()
               for part in ("--conf", f"{key}={value}")]
    return [str(spark_home() / "bin" / "spark-submit"), *options, str(script), *argv]
