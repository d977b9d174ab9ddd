"""The benchmark matrix: which (target, mode, protocol, clients) runs happen, in which order."""

from __future__ import annotations

from collections import Counter
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


@dataclass(frozen=True)
class Companion:
    """A proxy measured only in some cells, in the same rounds and lineups as the proxies.

    Unlike a Reference it has pool modes: in the (mode, protocol, clients) cells it `runs_in`,
    it runs right beside the proxy named `beside`, the two taking one place in the lineup's
    rotation, which of them goes first changing from round to round and cell to cell.
    """

    name: str
    modes: tuple[str, ...]
    protocols: tuple[str, ...]
    clients: tuple[int, ...]
    beside: str = "pyproxy"

    def runs_in(self, mode: str, protocol: str, clients: int) -> bool:
        return mode in self.modes and protocol in self.protocols and clients in self.clients


# The gated cells: those the acceptance figures are about.
GATED_MODES = ("transaction",)
GATED_PROTOCOLS = ("simple", "extended")
GATED_CLIENTS = (10, 50, 200)

# The bare byte relay is the floor of the gated cells (transaction mode, simple and extended,
# 10/50/200 clients); it opens a backend per client, so it stays out of the 1000-client cells.
RELAY = Reference("relay", GATED_PROTOCOLS, GATED_CLIENTS)
REFERENCES = (RELAY,)


def baseline_companion(name: str) -> Companion:
    """pyproxy at another commit (`--baseline`), beside pyproxy in the gated cells."""
    return Companion(name, GATED_MODES, GATED_PROTOCOLS, GATED_CLIENTS)


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
    companions: tuple[Companion, ...] = (),
) -> list[Run]:
    """Order the runs so targets of one cell run back to back, rotating who goes first.

    Each cell runs `repeat` rounds in a row, every round with all its targets, so a round's
    figures can be compared with each other and the report can take medians over rounds.
    Direct PostgreSQL has no pool mode: it runs once per (protocol, clients) and round,
    interleaved with the first mode cell of that group, and its figures serve every mode.
    Each of `references` runs the same way, next to direct, in the groups it `runs_in`.
    Each of `companions` joins the lineup in the cells it `runs_in`, right beside its proxy: the
    two take one place in the rotation, and which of them goes first changes from round to
    round and cell to cell (see `_places`), so neither always follows the same target.
    `skip` holds (target, mode, protocol) combinations a target cannot carry.
    """
    groups: dict[tuple[str, int], list[str]] = {}
    for mode, protocol, clients in cells(spec):
        groups.setdefault((protocol, clients), []).append(mode)
    ordered = sorted(groups.items(), key=lambda item: (item[0][1], PROTOCOLS.index(item[0][0])))
    runs: list[Run] = []
    turn = 0
    joined: Counter[str] = Counter()  # lineups each companion has joined so far
    for (protocol, clients), modes in ordered:
        for index, mode in enumerate(modes):
            for round_ in range(repeat):
                lineup: list[list[Run]] = []
                if index == 0:
                    lineup = [[Run("direct", None, protocol, clients, round_)]]
                    lineup += [
                        [Run(ref.name, None, protocol, clients, round_)]
                        for ref in references
                        if ref.runs_in(protocol, clients)
                    ]
                for names in _places(proxies, companions, (mode, protocol, clients), joined):
                    place = [
                        Run(name, mode, protocol, clients, round_)
                        for name in names
                        if (name, mode, protocol) not in skip
                    ]
                    lineup += [place] if place else []
                shift = turn % len(lineup)
                runs += [run for place in lineup[shift:] + lineup[:shift] for run in place]
                turn += 1
    return runs


def _places(
    proxies: tuple[str, ...],
    companions: tuple[Companion, ...],
    cell: tuple[str, str, int],
    joined: Counter[str],
) -> list[list[str]]:
    """The proxies' places in a lineup: each proxy alone, or with the companions that run
    beside it in `cell`, after it or before it in the pattern after, before, before, after,
    ... over the lineups the companion joins (counted in `joined`). Any two or three lineups in
    a row have both orders (the rounds of a cell), and so do the cells of one protocol or of one
    client count when each has a single round (a plain alternation would put the proxy first in
    every simple cell and last in every extended one). A companion whose proxy is not there
    takes a place of its own at the end."""
    places = [[name] for name in proxies]
    for companion in companions:
        if not companion.runs_in(*cell):
            continue
        place = next((p for p in places if companion.beside in p), None)
        if place is None:
            places.append([companion.name])
        elif joined[companion.name] % 4 in (0, 3):
            place.append(companion.name)
        else:
            place.insert(0, companion.name)
        joined[companion.name] += 1
    return places
