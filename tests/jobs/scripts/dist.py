"""Two instances agree through torch.distributed (gloo); only the primary writes the model."""

import json
import os

import torch
import torch.distributed as dist

torch.set_num_threads(1)
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
value = torch.tensor([float(rank + 1)])
dist.all_reduce(value)
hosts = json.loads(os.environ["SM_HOSTS"])
print(f"host={os.environ['SM_CURRENT_HOST']} rank={rank} world={world} sum={value.item():.1f}")
if rank == 0:
    print(f"epoch=1 train:loss={1.0 / value.item():.4f}")
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as handle:
        json.dump({"sum": value.item(), "hosts": hosts, "world": world}, handle)
else:
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as handle:
        json.dump({"from": "secondary"}, handle)
dist.barrier()
dist.destroy_process_group()
