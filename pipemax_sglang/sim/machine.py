"""The simulated server: GPUs of one hardware profile, their PCIe links, host memory.

    GPU g --x16-- [switch: gpus_per_switch GPUs] --uplink-- host (CPU memory)

With gpus_per_switch = 1 every GPU has its own H2D and D2H link (profile bandwidth each
way, independent directions). With k > 1, k consecutive GPUs share one switch uplink per
direction (uplink_gbps, default: one x16 link of the profile), so their transfers queue
behind each other: the ceiling of performance-model.md divides by up to k.

Assumptions on top of the core's datasheet profile (each a field, so a user can change it):

    reserve_gb           GPU memory neither weights nor KV: CUDA context, activations of a
                         prefill chunk, graphs. 1.5 GB is what a 4k-token chunk of a 70B
                         model needs in activations (~0.5 GB) plus context and graphs.
    step_overhead_s      fixed cost of one forward on a stage besides the weight read
                         (launches, sampling, the scheduler's own work): 0.5 ms.
    allreduce_hop_s      per-hop latency of a ring all-reduce over PCIe (tensor-parallel
                         baseline): 4 us, so an 8-GPU all-reduce of a small message costs
                         2 * 7 * 4 = 56 us, the tens of microseconds NCCL reaches on PCIe.
    ring_gbps            all-reduce bus bandwidth per GPU; default the profile's H2D rate
                         (generous to tensor parallelism: GeForce cards have no P2P and
                         bounce through host memory).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipemax_sglang.core import PROFILES, HardwareProfile, TransferModel


@dataclass(frozen=True)
class Machine:
    profile: HardwareProfile
    num_gpus: int = 8
    host_mem_gb: float = 256.0          # host memory for KV (1e9 bytes), whole machine
    gpus_per_switch: int = 1
    uplink_gbps: float | None = None    # per direction; None: the profile's link
    reserve_gb: float = 1.5
    step_overhead_s: float = 0.5e-3
    allreduce_hop_s: float = 4e-6
    ring_gbps: float | None = None

    def __post_init__(self) -> None:
        if self.num_gpus < 1 or self.gpus_per_switch < 1:
            raise ValueError("num_gpus and gpus_per_switch must be >= 1")
        if self.num_gpus % self.gpus_per_switch:
            raise ValueError(f"{self.num_gpus} GPUs do not split into switches of "
                             f"{self.gpus_per_switch}")
        if self.host_mem_gb < 0 or self.reserve_gb < 0 or self.step_overhead_s < 0:
            raise ValueError("host_mem_gb, reserve_gb and step_overhead_s must be >= 0")

    @classmethod
    def named(cls, gpu: str, **kw) -> "Machine":
        if gpu not in PROFILES:
            raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(PROFILES)}")
        return cls(PROFILES[gpu], **kw)

    @property
    def uplink_bytes_per_s(self) -> float:
        gbps = self.uplink_gbps if self.uplink_gbps is not None else self.profile.h2d_gbps
        return gbps * 1e9

    @property
    def ring_bytes_per_s(self) -> float:
        return (self.ring_gbps if self.ring_gbps is not None else self.profile.h2d_gbps) * 1e9

    def link_rates(self) -> tuple[float, float]:
        """(H2D, D2H) bytes/s one transfer gets on the wire: a switch uplink is a single
        x16 link, shared in time (FIFO) by its GPUs."""
        p = self.profile
        if self.gpus_per_switch == 1:
            return p.h2d_bytes_per_s, p.d2h_bytes_per_s
        up = self.uplink_bytes_per_s
        return min(p.h2d_bytes_per_s, up), min(p.d2h_bytes_per_s, up)

    def policy_transfer_model(self) -> TransferModel:
        """What the budget assumes per stage: its fair share of a shared uplink (a stage
        cannot know when its siblings will transfer), the whole link otherwise."""
        h2d, d2h = self.link_rates()
        k = self.gpus_per_switch
        return TransferModel(self.profile.link_latency_s, h2d / k, d2h / k)

    def pcie_bytes_per_s(self) -> float:
        """Sustained H2D rate per GPU when all GPUs pull at once (the ceiling's BW_pcie)."""
        return self.link_rates()[0] / self.gpus_per_switch

    def host_kv_tokens(self, kv_bytes_per_token: int) -> int:
        """Tokens of whole-model KV the host memory holds (every stage holds its share)."""
        return int(self.host_mem_gb * 1e9 // kv_bytes_per_token)
