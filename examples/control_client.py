# examples/control_client.py: drive a running daemon from Python (the client the CLI uses)
from dynworkers import ControlClient

# the daemon's address: DYNWORKERS_URL, else <state_dir>/daemon.json, else the config's
client = ControlClient.discover()
print([t["tenant"] for t in client.tenants()["tenants"]])
created = client.create("pipeline", params={"commit": "abc123"})
print(client.status("pipeline", created["id"])["status"])  # "queued", "running", ...
print(client.instances("pipeline", status="waiting")["instances"])
# AsyncControlClient has the same methods, to await: `async with AsyncControlClient(url) as c:`
