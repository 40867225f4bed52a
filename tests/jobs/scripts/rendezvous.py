"""Two instances meet at MASTER_ADDR:MASTER_PORT over TCP; only the primary writes the model."""

import json
import os
import socket
import time

rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
address = (os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
hosts = json.loads(os.environ["SM_HOSTS"])
if rank == 0:
    with socket.create_server(address) as server:
        server.settimeout(60)
        connection, _ = server.accept()
        with connection:
            peer = json.loads(connection.recv(1024).decode())
    print(f"epoch=1 train:loss={1.0 / world:.4f}")
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as handle:
        json.dump({"peer": peer, "hosts": hosts, "world": world}, handle)
else:
    deadline = time.monotonic() + 60
    while True:
        try:
            connection = socket.create_connection(address, timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with connection:
        message = {"rank": rank, "host": os.environ["SM_CURRENT_HOST"]}
        connection.sendall(json.dumps(message).encode())
    print(f"host={os.environ['SM_CURRENT_HOST']} rank={rank} world={world} sent")
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as handle:
        json.dump({"from": "secondary"}, handle)
