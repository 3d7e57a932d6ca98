"""The orchestrator tests run in environments of their own (`bash .ci/integrations dagster|airflow`); in the
main environment they skip. Airflow keeps its configuration under AIRFLOW_HOME, created on import: a
throwaway folder unless the caller chose one."""

from __future__ import annotations

import importlib.util
import os
import tempfile

if importlib.util.find_spec("airflow") is not None:
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="reflow-airflow-"))
