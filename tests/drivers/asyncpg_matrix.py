"""The driver matrix for asyncpg (tests/drivers.rs runs it, checks the output
and where rows landed). Each scenario runs its own event loop, in the thread
matrix.run gives it."""

import asyncio
import uuid

import asyncpg

from matrix import CFG, ORDER, READERS, WRITERS, attempt_async, code_of, run

READ = "SELECT email FROM users WHERE tenant_id = $1::uuid ORDER BY email"
COUNT = "SELECT count(*) FROM users WHERE tenant_id = $1::uuid"
INSERT = "INSERT INTO users (tenant_id, email) VALUES ($1::uuid, $2)"
SEEN = "SELECT count(*) FROM users WHERE tenant_id = $1::uuid AND email = 'commit@us'"


def scenario(coro_fn):
    """A plain function running coro_fn on a connection of its own."""

    def fn():
        async def main():
            conn = await asyncpg.connect(
                host=CFG["host"],
                port=CFG["port"],
                user=CFG["user"],
                password=CFG["password"],
                database=CFG["db"],
                ssl=False,
            )
            try:
                return await coro_fn(conn)
            finally:
                await conn.close(timeout=2)

        return asyncio.run(main())

    return fn


async def emails(conn, region):
    return [r["email"] for r in await conn.fetch(READ, READERS[region])]


async def expect_error(aw):
    """The SQLSTATE the awaitable raised, or None if it raised nothing."""
    try:
        await aw
    except asyncpg.PostgresError as e:
        return code_of(e)
    return None


async def tenant_reads(conn):
    return {r: await emails(conn, r) for r in ORDER}


async def explicit_region(conn):
    sql = "SELECT count(*) FROM users WHERE region = $1::text::region AND email LIKE 'u%'"
    return {r: await conn.fetchval(sql, r) for r in ORDER}


async def insert_without_region(conn):
    return await conn.execute(INSERT, WRITERS["us"], "insert@us")


async def commit_rollback(conn):
    async with conn.transaction():
        await conn.execute(INSERT, WRITERS["us"], "commit@us")
        seen = await conn.fetchval(SEEN, WRITERS["us"])
    tr = conn.transaction()
    await tr.start()
    await conn.execute(INSERT, WRITERS["apac"], "rollback@apac")
    await tr.rollback()
    return {"seen_in_txn": seen, "after": await attempt_async(emails(conn, "eu"))}


async def gg001_then_works(conn):
    code = await expect_error(conn.fetch("SELECT email FROM users WHERE email = $1", "x"))
    return {"code": code, "after": await attempt_async(emails(conn, "eu"))}


async def server_error_then_works(conn):
    code = await expect_error(
        conn.fetch("SELECT count(*) / 0 FROM users WHERE tenant_id = $1::uuid", READERS["us"])
    )
    return {"code": code, "after": await attempt_async(emails(conn, "apac"))}


async def prepared_alternating(conn):
    stmt = await conn.prepare(COUNT)
    return [[r, await stmt.fetchval(READERS[r])] for r in ORDER * 3]


async def batch_two_regions(conn):
    # executemany: Bind/Execute per row, one Sync: one implicit transaction.
    code = await expect_error(
        conn.executemany(INSERT, [(WRITERS["us"], "batch-1@us"), (WRITERS["eu"], "batch-2@eu")])
    )
    return {"code": code, "after": await attempt_async(emails(conn, "eu"))}


async def copy_in(conn):
    t = uuid.UUID(WRITERS["us"])
    code = await expect_error(
        conn.copy_records_to_table(
            "users",
            records=[(t, "copy-1@us", "us"), (t, "copy-2@us", "us")],
            columns=["tenant_id", "email", "region"],
        )
    )
    return {"code": code, "after": await attempt_async(emails(conn, "eu"))}


run(
    [
        ("tenant_reads", scenario(tenant_reads)),
        ("explicit_region", scenario(explicit_region)),
        ("gg001_then_works", scenario(gg001_then_works)),
        ("server_error_then_works", scenario(server_error_then_works)),
        ("prepared_alternating", scenario(prepared_alternating)),
        ("insert_without_region", scenario(insert_without_region)),
        ("commit_rollback", scenario(commit_rollback)),
        ("batch_two_regions", scenario(batch_two_regions)),
        ("copy_in", scenario(copy_in)),
    ]
)
