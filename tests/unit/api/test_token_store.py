"""The token store on homes made by the previous version (one unflagged admin record, or
several when admin.token went missing), and ensure_admin's recovery of the file."""

from __future__ import annotations

import json
import time
from pathlib import Path

from socle.api.tokens import PREFIX, TokenStore, digest
from socle.state.memory import MemoryData, MemoryStore


async def _old_admin(store: MemoryStore, token: str) -> None:
    body = json.dumps({"name": "admin", "created": time.time()}).encode()
    await store.put(PREFIX + digest(token), body)


async def test_old_records_are_admins_and_rotation_removes_every_copy(tmp_path: Path) -> None:
    store = MemoryStore(MemoryData())
    await _old_admin(store, "socle_old1")
    await _old_admin(store, "socle_old2")
    (tmp_path / "admin.token").write_text("socle_old2\n")
    tokens = TokenStore(store)
    await tokens.ensure_admin(tmp_path / "admin.token")  # the file's token is valid: kept
    info = await tokens.check("socle_old1")
    assert info is not None and info.admin
    new = await tokens.rotate_admin()
    assert await tokens.check("socle_old1") is None and await tokens.check("socle_old2") is None
    assert (tmp_path / "admin.token").read_text().strip() == new
    assert [i.name for i in await tokens.list()] == ["admin"]
    assert b"socle_" not in b"".join(r.value for r in await store.scan(PREFIX))


async def test_a_missing_or_stale_admin_file_is_replaced(tmp_path: Path) -> None:
    store = MemoryStore(MemoryData())
    tokens = TokenStore(store)
    token_file = tmp_path / "admin.token"
    await tokens.ensure_admin(token_file)
    first = token_file.read_text().strip()
    assert token_file.stat().st_mode & 0o777 == 0o600
    token_file.write_text("socle_stale\n")
    await TokenStore(store).ensure_admin(token_file)
    second = token_file.read_text().strip()
    assert second != first and await TokenStore(store).check(first) is None
    assert [i.name for i in await tokens.list()] == ["admin"]
