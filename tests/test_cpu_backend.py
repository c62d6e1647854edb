"""HiCache's host<->device copies on CPU: every MHA host layout round-trips the KV exactly.

Uses the real transfer functions of pipemax_sglang.sglang.cpu_backend on host buffers shaped
as SGLang 0.5.23 allocates them (pool_host/mha.py init_kv_buffer), with a stand-in for the
host pool object carrying only the attributes the functions read.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pipemax_sglang.sglang import cpu_backend

L, S, H, D, P = 3, 32, 2, 4, 4  # layers, host tokens, kv heads, head dim, page size
DEV_TOKENS = 40


def _host(layout: str):
    shape = {
        "layer_first": (2, L, S, H, D),
        "page_first": (2, S, L, H, D),
        "page_first_direct": (2, S // P, L, P, H, D),
        "page_head": (2, S // P, H, P, L, D),
    }[layout]
    buf = torch.full(shape, float("nan"))
    device_k = [torch.randn(DEV_TOKENS, H, D) for _ in range(L)]
    device_v = [torch.randn(DEV_TOKENS, H, D) for _ in range(L)]
    return SimpleNamespace(layout=layout, page_size=P, layer_num=L, target_layer_num=L,
                           k_buffer=buf[0], v_buffer=buf[1],
                           device_k_buffers=device_k, device_v_buffers=device_v)


@pytest.mark.parametrize("layout", ["layer_first", "page_first", "page_first_direct", "page_head"])
def test_backup_then_load_restores_every_layer(layout):
    host = _host(layout)
    # page-aligned host slots, scattered device slots (as HiCache allocates them)
    host_idx = torch.tensor([4, 5, 6, 7, 20, 21, 22, 23])
    dev_idx = torch.tensor([3, 17, 9, 30, 1, 2, 38, 11])
    want_k = [k[dev_idx].clone() for k in host.device_k_buffers]
    want_v = [v[dev_idx].clone() for v in host.device_v_buffers]

    cpu_backend.backup_from_device_all_layer(host, None, host_idx, dev_idx, "kernel")
    cpu_backend.Links.drain()  # copies run on the D2H copier thread
    for buf in host.device_k_buffers + host.device_v_buffers:  # the device copy is evicted
        buf.zero_()
    new_dev = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    for layer in range(L):
        cpu_backend.load_to_device_per_layer(host, None, host_idx, new_dev, layer, "kernel")
    cpu_backend.Links.drain()

    for layer in range(L):
        assert torch.equal(host.device_k_buffers[layer][new_dev], want_k[layer])
        assert torch.equal(host.device_v_buffers[layer][new_dev], want_v[layer])
        assert torch.count_nonzero(host.device_k_buffers[layer][8:]) == 0  # nothing else written


def test_a_transfer_reads_the_indices_it_was_given_though_the_caller_refills_them():
    """The index copies are taken at a transfer's first layer and kept for its later layers;
    a second transfer over the same (refilled) tensors copies them again."""
    host = _host("layer_first")
    for layer in range(L):
        host.k_buffer[layer, :8] = torch.arange(8.0).view(8, 1, 1).expand(8, H, D) + 100 * layer
    host_idx, dev_idx = torch.tensor([1, 2]), torch.tensor([10, 11])
    cpu_backend.load_to_device_per_layer(host, None, host_idx, dev_idx, 0, "kernel")
    host_idx[:] = torch.tensor([5, 6])                # refilled mid-transfer: layers 1.. keep [1, 2]
    for layer in range(1, L):
        cpu_backend.load_to_device_per_layer(host, None, host_idx, dev_idx, layer, "kernel")
    cpu_backend.Links.drain()
    for layer in range(L):
        assert host.device_k_buffers[layer][10:12, 0, 0].tolist() == [1 + 100 * layer, 2 + 100 * layer]
    for layer in range(L):                            # a second transfer: reads [5, 6]
        cpu_backend.load_to_device_per_layer(host, None, host_idx, dev_idx, layer, "kernel")
    cpu_backend.Links.drain()
    for layer in range(L):
        assert host.device_k_buffers[layer][10:12, 0, 0].tolist() == [5 + 100 * layer, 6 + 100 * layer]


def test_pipemax_owned_indices_are_read_as_given_and_only_those():
    """Inside owned_indices(h, d) a copy over exactly h and d reads them without a copy of
    its own (refilled before the copy runs, it reads the new values: no copy was taken);
    any other tensors in the same window are copied as always (the old values are read)."""
    import threading

    host = _host("layer_first")
    for t in range(8):
        host.k_buffer[:, t] = float(t)
    gate = threading.Event()
    h2d, _ = cpu_backend.Links.get()
    h2d.submit(gate.wait, 0)                          # hold the link: copies run after the refill
    own_h, own_d = torch.tensor([1, 2]), torch.tensor([10, 11])
    other_h, other_d = torch.tensor([3, 4]), torch.tensor([20, 21])
    with cpu_backend.owned_indices(own_h, own_d):
        for layer in range(L):
            cpu_backend.load_to_device_per_layer(host, None, own_h, own_d, layer, "kernel")
            cpu_backend.load_to_device_per_layer(host, None, other_h, other_d, layer, "kernel")
    own_h[:] = torch.tensor([5, 6])
    other_h[:] = torch.tensor([7, 7])
    gate.set()
    cpu_backend.Links.drain()
    for layer in range(L):
        assert host.device_k_buffers[layer][10:12, 0, 0].tolist() == [5.0, 6.0]    # read as given
        assert host.device_k_buffers[layer][20:22, 0, 0].tolist() == [3.0, 4.0]    # copied
    with cpu_backend.owned_indices(own_h, own_d):
        pass
    assert cpu_backend._owned is None                 # the window closes with the context


def test_layouts_store_tokens_where_sglang_reads_them():
    """page_first keeps a token's layers together: host row t, layer l is k_buffer[t, l]."""
    host = _host("page_first")
    cpu_backend.backup_from_device_all_layer(host, None, torch.tensor([9]), torch.tensor([5]), "kernel")
    cpu_backend.Links.drain()
    for layer in range(L):
        assert torch.equal(host.k_buffer[9, layer], host.device_k_buffers[layer][5])


def test_out_of_range_layer_is_ignored_like_sglang():
    host = _host("layer_first")
    before = [b.clone() for b in host.device_k_buffers]
    cpu_backend.load_to_device_per_layer(host, None, torch.tensor([0]), torch.tensor([0]), L + 1, "kernel")
    cpu_backend.Links.drain()
    assert all(torch.equal(a, b) for a, b in zip(before, host.device_k_buffers))


def test_an_event_recorded_after_a_copy_waits_for_it():
    """What HiCache relies on: ack events complete only when the copies before them have."""
    from pipemax_sglang.runtime.copier import CopierEvent

    host = _host("page_first")
    host.k_buffer[1, 0] = torch.randn(H, D)
    gate = __import__("threading").Event()
    h2d, _ = cpu_backend.Links.get()
    h2d.submit(gate.wait, 0)          # hold the H2D link busy
    CopierEvent.note_use(h2d)
    cpu_backend.load_to_device_per_layer(host, None, torch.tensor([1]), torch.tensor([2]), 0, "kernel")
    ev = CopierEvent()
    ev.record()
    assert not ev.query()             # the copy is queued behind the held job
    gate.set()
    ev.synchronize()
    assert ev.query()
    assert torch.equal(host.device_k_buffers[0][2], host.k_buffer[1, 0])


def test_a_stream_waiting_on_an_event_blocks_until_the_copies_landed():
    """HiCache's per-layer load wait is current_stream().wait_event(ev): on CPU it must block."""
    import threading

    from pipemax_sglang.runtime.copier import CopierEvent

    cpu_backend.register_hooks()
    host = _host("layer_first")
    host.k_buffer[0, 3] = torch.randn(H, D)
    gate = threading.Event()
    h2d, _ = cpu_backend.Links.get()
    h2d.submit(gate.wait, 0)
    CopierEvent.note_use(h2d)
    cpu_backend.load_to_device_per_layer(host, None, torch.tensor([3]), torch.tensor([7]), 0, "kernel")
    ev = torch.cpu.Event()
    assert isinstance(ev, CopierEvent)
    ev.record()
    threading.Timer(0.05, gate.set).start()
    torch.cpu.current_stream().wait_event(ev)   # returns only after the copy
    assert torch.equal(host.device_k_buffers[0][7], host.k_buffer[0, 3])


def test_a_pipemax_load_is_one_job_for_every_layer_and_others_stay_per_layer():
    """Inside owned_indices(h, d, layers) SGLang's per-layer calls for exactly h and d submit
    one job, at the first call, that loads all `layers`; later calls add nothing. Another
    transfer in the same window is still a job a layer; without `layers` (a write) the
    owned tensors are loaded layer by layer too."""
    host = _host("layer_first")
    for layer in range(L):
        host.k_buffer[layer, :8] = torch.arange(8.0).view(8, 1, 1).expand(8, H, D) + 100 * layer
    h2d, _ = cpu_backend.Links.get()
    own_h, own_d = torch.tensor([1, 2]), torch.tensor([10, 11])
    other_h, other_d = torch.tensor([3, 4]), torch.tensor([20, 21])
    start = h2d.tail()
    with cpu_backend.owned_indices(own_h, own_d, layers=L):
        cpu_backend.load_to_device_per_layer(host, None, own_h, own_d, 0, "kernel")
        assert h2d.tail() == start + 1                # every layer's copy is queued at layer 0
        for layer in range(1, L):
            cpu_backend.load_to_device_per_layer(host, None, own_h, own_d, layer, "kernel")
        assert h2d.tail() == start + 1
        for layer in range(L):
            cpu_backend.load_to_device_per_layer(host, None, other_h, other_d, layer, "kernel")
        assert h2d.tail() == start + 1 + L            # not PipeMax's: a job a layer
    cpu_backend.Links.drain()
    for layer in range(L):
        assert host.device_k_buffers[layer][10:12, 0, 0].tolist() == [1 + 100 * layer, 2 + 100 * layer]
        assert host.device_k_buffers[layer][20:22, 0, 0].tolist() == [3 + 100 * layer, 4 + 100 * layer]
    start = h2d.tail()
    with cpu_backend.owned_indices(own_h, own_d):     # no layer count: per layer, as SGLang asks
        for layer in range(L):
            cpu_backend.load_to_device_per_layer(host, None, own_h, own_d, layer, "kernel")
    assert h2d.tail() == start + L
    cpu_backend.Links.drain()


def test_a_pipemax_load_copies_the_layers_it_was_given_and_no_more():
    """`layers` (compat passes the engine's transfer_layer_id_max) bounds the one job: a
    stage whose engine asks for fewer layers than the host pool holds loads only those."""
    host = _host("layer_first")
    host.k_buffer[:, :4] = 7.0
    own_h, own_d = torch.tensor([1, 2]), torch.tensor([10, 11])
    for buf in host.device_k_buffers:
        buf.zero_()
    with cpu_backend.owned_indices(own_h, own_d, layers=L - 1):
        for layer in range(L - 1):
            cpu_backend.load_to_device_per_layer(host, None, own_h, own_d, layer, "kernel")
    cpu_backend.Links.drain()
    assert [host.device_k_buffers[layer][10, 0, 0].item() for layer in range(L)] == [7.0] * (L - 1) + [0.0]
