"""Point-to-point and broadcasts inside the pipeline group, for what the schedule does not
carry: evaluation's activations (any batch shape) and the last stage's results.

Tensors travel with a fixed-size header (dtype, shape), so the receiver needs no prior
knowledge of the shape; results travel as JSON bytes, never pickled.
"""

from __future__ import annotations

import dataclasses
import json

import torch
import torch.distributed as dist

_DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64, torch.int32]
_HEADER = 8  # dtype code, number of dims, up to 6 sizes


class PipelineComm:
    """This rank's view of the `pp` process group."""

    def __init__(self, group: dist.ProcessGroup, *, device: torch.device):
        self.group, self.device = group, device
        self.rank = dist.get_rank(group)

    def all_reduce(self, tensor: torch.Tensor) -> None:
        dist.all_reduce(tensor, group=self.group)

    def send(self, tensor: torch.Tensor, peer: int) -> None:
        tensor = tensor.detach().contiguous()
        header = torch.zeros(_HEADER, dtype=torch.int64)
        header[0], header[1] = _DTYPES.index(tensor.dtype), tensor.dim()
        header[2 : 2 + tensor.dim()] = torch.tensor(tensor.shape)
        dist.send(header.to(self.device), group=self.group, group_dst=peer)
        dist.send(tensor, group=self.group, group_dst=peer)

    def recv(self, peer: int) -> torch.Tensor:
        header = torch.zeros(_HEADER, dtype=torch.int64, device=self.device)
        dist.recv(header, group=self.group, group_src=peer)
        code, ndim, *sizes = header.tolist()
        tensor = torch.empty(sizes[:ndim], dtype=_DTYPES[code], device=self.device)
        dist.recv(tensor, group=self.group, group_src=peer)
        return tensor

    def broadcast_json(self, value, *, src: int):
        """`value` (JSON-able, NaN allowed) of rank `src`, on every rank."""
        if self.rank == src:
            data = torch.frombuffer(bytearray(json.dumps(value).encode()), dtype=torch.uint8)
            length = torch.tensor([data.numel()], dtype=torch.int64)
        else:
            length = torch.zeros(1, dtype=torch.int64)
        length = length.to(self.device)
        dist.broadcast(length, group=self.group, group_src=src)
        if self.rank != src:
            data = torch.empty(int(length.item()), dtype=torch.uint8)
        data = data.to(self.device)
        dist.broadcast(data, group=self.group, group_src=src)
        return json.loads(bytes(data.cpu().numpy()).decode())

    def share_result(self, result, *, src: int):
        """An `EvalResult` scored on rank `src`: loss and metrics everywhere, predictions
        (when kept) on pipeline rank 0, which writes them."""
        predictions = result.predictions
        header = None if predictions is None else sorted(predictions)
        shared = self.broadcast_json(
            {"loss": result.loss, "metrics": result.metrics, "predictions": header}, src=src
        )
        if shared["predictions"] is not None and src != 0 and self.rank in (0, src):
            predictions = {}
            for key in shared["predictions"]:
                if self.rank == src:
                    self.send(torch.from_numpy(result.predictions[key]), 0)
                else:
                    predictions[key] = self.recv(src).cpu().numpy()
        if self.rank != 0:
            predictions = None
        metrics = shared["metrics"]
        return dataclasses.replace(
            result, loss=shared["loss"], metrics=metrics, predictions=predictions
        )
