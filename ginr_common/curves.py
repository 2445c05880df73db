"""Space-filling curves: an order of scattered coordinates in which nearby points are nearby in
the sequence (the order a sequence model reads points and queries in)."""
import torch


def curve_index(coords, transpose=False, bits=16):
    """Position of each coordinate (B, Q, d) in [0, 1] along a space-filling curve -> (B, Q)
    long: the Hilbert curve for d = 2 (axes swapped with ``transpose``), the Morton (Z) curve
    otherwise. Nearby coordinates get nearby indices, whatever the set of coordinates."""
    n = 1 << bits
    q = (coords.clamp(0, 1) * n).long().clamp(max=n - 1)     # the cell of a 2^bits grid
    if transpose:
        q = q.flip(-1)
    if q.shape[-1] != 2:
        idx = torch.zeros(q.shape[:-1], dtype=torch.long, device=q.device)
        for b in range(bits):
            for a in range(q.shape[-1]):
                idx |= ((q[..., a] >> b) & 1) << (b * q.shape[-1] + a)
        return idx
    y, x = q[..., 0], q[..., 1]
    d = torch.zeros_like(x)
    s = n // 2
    while s > 0:
        rx, ry = (x & s) > 0, (y & s) > 0
        d += s * s * ((3 * rx.long()) ^ ry.long())
        flip = (~ry) & rx
        x, y = torch.where(flip, n - 1 - x, x), torch.where(flip, n - 1 - y, y)
        x, y = torch.where(~ry, y, x), torch.where(~ry, x, y)
        s //= 2
    return d


def curve_orders(coords, n):
    """``n`` (order, inverse) pairs of (B, Q) indices, alternating the curve and its transpose:
    ``x.gather(1, order)`` puts the points in curve order and ``inverse`` puts them back."""
    out = []
    for i in range(min(n, 2)):
        order = curve_index(coords, transpose=bool(i % 2)).argsort(dim=1)
        out.append((order, order.argsort(dim=1)))
    return [out[i % len(out)] for i in range(n)]


def take_rows(x, idx):
    """Per-batch row selection: x (B, N, C), idx (B, K) long -> (B, K, C)."""
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
