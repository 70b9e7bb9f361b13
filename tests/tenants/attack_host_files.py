"""Attack class: name a tenant module after a host file so that its traceback shows the host
file's lines (linecache resolves a bare file name on the zygote's sys.path and working directory).
The defence: tenant tracebacks are rendered from the tenant's own source only."""

#: Written as `settings.py` in the host's working directory: line 9 holds a secret.
HOST_SETTINGS = "\n".join(
    ["# host settings"] + [f"# filler {n}" for n in range(2, 9)] + ["DATABASE_PASSWORD = 'hunter2'"]
)

#: The tenant's `settings` module: line 9 raises.
TENANT_SETTINGS = """# tenant settings
def boom():
    x = 1
    y = 2
    z = 3
    w = 4
    v = 5
    u = 6
    raise RuntimeError("tenant line nine")
"""

TENANT_MAIN = """
from workers import WorkerEntrypoint
import settings


class Default(WorkerEntrypoint):
    def go(self):
        settings.boom()
"""
