"""The simulated server: GPUs of one hardware profile, their PCIe links, host memory.

    GPU g --x16-- [switch: gpus_per_switch GPUs] --uplink-- host (CPU memory)

With gpus_per_switch = 1 every GPU has its own H2D and D2H link (profile bandwidth each
way, independent directions). With k > 1, k consecutive GPUs share one switch uplink per
direction (uplink_gbps, default: one x16 link of the profile), so their transfers queue
behind each other: the ceiling of performance-model.md divides by up to k.

Assumptions and calibrations on top of the core's datasheet profile (each a field, so a
user can change it):

    reserve_gb           GPU memory neither weights nor KV: CUDA context, activations of a
                         prefill chunk, graphs. 1.5 GB is what a 4k-token chunk of a 70B
                         model needs in activations (~0.5 GB) plus context and graphs.
    step_overhead_s      fixed GPU cost of one forward on a stage besides its kernels
                         (sampling, small ops): 0.5 ms, an assumption.
    kernels              how close a forward gets to the datasheet, and how much weight
                         reads and compute overlap: fitted to TD-Pipe's L20 profiles
                         (calibration.py).
    allreduce            NCCL ring all-reduce over PCIe, time by message size: fitted to
                         published 4090 measurements (calibration.py); an upper bound for
                         GeForce cards without a P2P driver.
    move_s, move_turn_s  the scheduler's CPU price of moves (core/move_price.py): move_turn_s
                         a turn that moves at all (its batched copies, its rebuilt decode
                         batch), move_s each park or rejoin, charged on each stage's CPU
                         timeline (engine.py). Defaults: 1.5 ms and 30 us, fitted over
                         bench_moves.py's points on our 2-core CPU hosts (turns of 16 moves
                         took 1.7-2.2 ms, of 64 moves 3.2-3.5 ms); a faster host CPU lowers
                         both. A single price per move (an old default, 0.5 ms) charged a
                         stream of 60 rows a turn 60 ms where these hosts spend ~5.
    moves_serialize      False (a GPU): a turn's moves run on the CPU beside the GPU's
                         previous turn; True (a CPU host: the forward shares the cores):
                         they add to the turn. The live decider has the same switch.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipemax_sglang.core import PROFILES, HardwareProfile, TransferModel
from pipemax_sglang.core.move_price import MovePrice

from .calibration import L20_KERNELS, PCIE_ALLREDUCE, AllReduceModel, Kernels

# The scheduler's price of moves (core/move_price.py), fitted over benchmarks/bench_moves.py's
# points on our 2-core CPU hosts (module note).
MOVE_TURN_S = 1.5e-3
MOVE_S = 30e-6


@dataclass(frozen=True)
class Machine:
    profile: HardwareProfile
    num_gpus: int = 8
    host_mem_gb: float = 256.0          # host memory for KV (1e9 bytes), whole machine
    gpus_per_switch: int = 1
    uplink_gbps: float | None = None    # per direction; None: the profile's link
    reserve_gb: float = 1.5
    step_overhead_s: float = 0.5e-3
    kernels: Kernels = L20_KERNELS
    allreduce: AllReduceModel = PCIE_ALLREDUCE
    move_s: float = MOVE_S
    move_turn_s: float = MOVE_TURN_S
    moves_serialize: bool = False

    def __post_init__(self) -> None:
        if self.num_gpus < 1 or self.gpus_per_switch < 1:
            raise ValueError("num_gpus and gpus_per_switch must be >= 1")
        if self.num_gpus % self.gpus_per_switch:
            raise ValueError(f"{self.num_gpus} GPUs do not split into switches of "
                             f"{self.gpus_per_switch}")
        if min(self.host_mem_gb, self.reserve_gb, self.step_overhead_s, self.move_s,
               self.move_turn_s) < 0:
            raise ValueError("host_mem_gb, reserve_gb, step_overhead_s, move_s and move_turn_s "
                             "must be >= 0")

    @property
    def move_price(self) -> MovePrice:
        return MovePrice(self.move_turn_s, self.move_s)

    @classmethod
    def named(cls, gpu: str, **kw) -> "Machine":
        if gpu not in PROFILES:
            raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(PROFILES)}")
        return cls(PROFILES[gpu], **kw)

    @property
    def uplink_bytes_per_s(self) -> float:
        gbps = self.uplink_gbps if self.uplink_gbps is not None else self.profile.h2d_gbps
        return gbps * 1e9

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
