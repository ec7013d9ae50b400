"""The Info object: channels from the shards that own them (each with the states of the members
whose users it owns too), then the other members' states from the shards that own the users.
One code for the API process (/info, /connect) and for a shard that answers /connect itself;
each brings its own way to ask shards (``Ask``)."""
from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterable

from .routing import by_owner
from .schemas import InfoFlags, Invalid

# The same command to several shards, one argument each; the answers in that order.
Ask = Callable[[dict[int, Any], str], Awaitable[list]]


def checked(reply: Any) -> Any:
    """A shard's answer, or the refusal it carries raised as Invalid."""
    if isinstance(reply, dict) and "error" in reply:
        raise Invalid(reply["error"], reply.get("status", 422))
    return reply


async def gather(ask: Ask, shards: int, flags: InfoFlags, names: list[str] | None,
                 match: str | None = None) -> dict:
    """``names`` None: every shard lists the channels it owns. With ``flags.limit``, one page
    of them by name, and ``next`` and ``remaining`` to go on; ``match``: see Shard.info."""
    args = {"exclude": flags.exclude_channels, "history": flags.include_history,
            "users": flags.include_users, "after": flags.after, "limit": flags.limit,
            "match": match and match.casefold(), "public": flags.return_public_state,
            "connections": flags.include_connections}
    if names is None:
        calls = {shard: {**args, "channels": None} for shard in range(shards)}
    else:
        calls = {shard: {**args, "channels": group}
                 for shard, group in by_owner(names, shards).items()}
    channels: dict = {}
    states: dict[str, dict] = {}     # members' entries that came with their channels
    chosen = 0
    for found in await ask(calls, "info"):
        channels.update(checked(found)["channels"])
        chosen += found["chosen"]
        states.update((entry["user"], entry) for entry in found.get("states", ()))
    listed = sorted(channels)[:flags.limit]
    page = {name: channels[name] for name in listed}
    answer = {"channels": page,
              "users": await _members(ask, shards, flags, page.values(), states)}
    if flags.limit is not None:
        remaining = chosen - len(listed)
        answer.update(next=listed[-1] if remaining else None, remaining=remaining)
    return answer


async def _members(ask: Ask, shards: int, flags: InfoFlags, channels: Iterable[dict],
                   states: dict[str, dict]) -> list[dict]:
    """The top-level ``users``: each member of ``channels`` once; ``states`` holds those that
    came with the channels, the others are asked of their users' owners."""
    if not flags.include_users:
        return []
    members = sorted({user for channel in channels for user in channel["users"]})
    users = [states[user] for user in members if user in states]
    missing = [user for user in members if user not in states]
    if missing:
        calls = {shard: {"users": group, "public": flags.return_public_state,
                         "connections": flags.include_connections}
                 for shard, group in by_owner(missing, shards).items()}
        users += [user for found in await ask(calls, "user_states") for user in checked(found)]
        users.sort(key=lambda entry: entry["user"])
    return users
