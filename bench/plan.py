"""The benchmark matrix: which (target, mode, protocol, clients) runs happen, in which order."""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOLS = ("simple", "extended", "prepared")
CLIENTS = (10, 50, 200, 1000)


@dataclass(frozen=True)
class Run:
    """One pgbench run of the matrix; mode is None for direct PostgreSQL and reference targets."""

    target: str
    mode: str | None
    protocol: str
    clients: int
    round: int = 0  # which repetition of its cell (0 .. repeat-1)


@dataclass(frozen=True)
class MatrixSpec:
    modes: tuple[str, ...]
    protocols: tuple[str, ...]
    clients: tuple[int, ...]
    extra_cells: tuple[tuple[str, str, int], ...] = ()  # (mode, protocol, clients) beyond the grid
    pool_size: int = 20


@dataclass(frozen=True)
class Reference:
    """A target without pool mode measured for comparison, only in some (protocol, clients) cells.

    Like direct PostgreSQL it runs once per (protocol, clients) and round, but only where
    `protocol` is one of `protocols` and `clients` one of `clients`.
    """

    name: str
    protocols: tuple[str, ...]
    clients: tuple[int, ...]

    def runs_in(self, protocol: str, clients: int) -> bool:
        return protocol in self.protocols and clients in self.clients


# The bare byte relay is the floor of the gated cells (transaction mode, simple and extended,
# 10/50/200 clients); it opens a backend per client, so it stays out of the 1000-client cells.
RELAY = Reference("relay", ("simple", "extended"), (10, 50, 200))
REFERENCES = (RELAY,)

FULL = MatrixSpec(("transaction", "session", "statement"), PROTOCOLS, CLIENTS)
QUICK = MatrixSpec(
    ("transaction",),
    ("simple", "extended"),
    (10, 50, 200),
    extra_cells=(("transaction", "simple", 1000),),
)


def session_clients(spec: MatrixSpec) -> tuple[int, ...]:
    """Session mode holds a server per connected client, so it runs only up to the pool size."""
    return tuple(sorted({c for c in spec.clients if c <= spec.pool_size} | {spec.pool_size}))


def cells(spec: MatrixSpec) -> list[tuple[str, str, int]]:
    """Every (mode, protocol, clients) cell of the matrix."""
    found: list[tuple[str, str, int]] = []
    for mode in spec.modes:
        counts = session_clients(spec) if mode == "session" else spec.clients
        found += [(mode, p, c) for p in spec.protocols for c in counts]
    found += [cell for cell in spec.extra_cells if cell not in found]
    return found


def build_plan(
    spec: MatrixSpec,
    proxies: tuple[str, ...],
    skip: set[tuple[str, str, str]],
    repeat: int = 1,
    references: tuple[Reference, ...] = (),
) -> list[Run]:
    """Order the runs so targets of one cell run back to back, rotating who goes first.

    Each cell runs `repeat` rounds in a row, every round with all its targets, so a round's
    figures can be compared with each other and the report can take medians over rounds.
    Direct PostgreSQL has no pool mode: it runs once per (protocol, clients) and round,
    interleaved with the first mode cell of that group, and its figures serve every mode.
    Each of `references` runs the same way, next to direct, in the groups it `runs_in`.
    `skip` holds (target, mode, protocol) combinations a target cannot carry.
    """
    groups: dict[tuple[str, int], list[str]] = {}
    for mode, protocol, clients in cells(spec):
        groups.setdefault((protocol, clients), []).append(mode)
    ordered = sorted(groups.items(), key=lambda item: (item[0][1], PROTOCOLS.index(item[0][0])))
    runs: list[Run] = []
    turn = 0
    for (protocol, clients), modes in ordered:
        for index, mode in enumerate(modes):
            for round_ in range(repeat):
                lineup: list[Run] = []
                if index == 0:
                    lineup = [Run("direct", None, protocol, clients, round_)]
                    lineup += [
                        Run(ref.name, None, protocol, clients, round_)
                        for ref in references
                        if ref.runs_in(protocol, clients)
                    ]
                lineup += [
                    Run(name, mode, protocol, clients, round_)
                    for name in proxies
                    if (name, mode, protocol) not in skip
                ]
                shift = turn % len(lineup)
                runs += lineup[shift:] + lineup[:shift]
                turn += 1
    return runs
