"""The driver matrix for psycopg 3 (tests/drivers.rs runs it, checks the
output and where rows landed)."""

import psycopg

from matrix import CFG, ORDER, READERS, WRITERS, attempt, code_of, run

READ = "SELECT email FROM users WHERE tenant_id = %s::uuid ORDER BY email"
COUNT = "SELECT count(*) FROM users WHERE tenant_id = %s::uuid"
INSERT = "INSERT INTO users (tenant_id, email) VALUES (%s::uuid, %s)"
SEEN = "SELECT count(*) FROM users WHERE tenant_id = %s::uuid AND email = 'commit@us'"


def connect(**kw):
    kw.setdefault("autocommit", True)
    return psycopg.connect(
        host=CFG["host"],
        port=CFG["port"],
        user=CFG["user"],
        password=CFG["password"],
        dbname=CFG["db"],
        sslmode="disable",
        **kw,
    )


def emails(cur):
    return [row[0] for row in cur.fetchall()]


def after(conn, region):
    """The reader's emails, or the error the read raised."""
    return attempt(lambda: emails(conn.execute(READ, [READERS[region]])))


def expect_error(fn):
    """The SQLSTATE fn raised, or None if it raised nothing."""
    try:
        fn()
    except psycopg.Error as e:
        return code_of(e)
    return None


def tenant_reads():
    with connect() as conn:
        return {r: emails(conn.execute(READ, [READERS[r]])) for r in ORDER}


def explicit_region():
    sql = "SELECT count(*) FROM users WHERE region = %s::text::region AND email LIKE 'u%%'"
    with connect() as conn:
        return {r: conn.execute(sql, [r]).fetchone()[0] for r in ORDER}


def insert_without_region():
    with connect() as conn:
        return conn.execute(INSERT, [WRITERS["us"], "insert@us"]).rowcount


def commit_rollback():
    with connect(autocommit=False) as conn:
        conn.execute(INSERT, [WRITERS["us"], "commit@us"])
        seen = conn.execute(SEEN, [WRITERS["us"]]).fetchone()[0]
        conn.commit()
        conn.execute(INSERT, [WRITERS["apac"], "rollback@apac"])
        conn.rollback()
        read = after(conn, "eu")
        conn.commit()
        return {"seen_in_txn": seen, "after": read}


def gg001_then_works():
    with connect() as conn:
        code = expect_error(
            lambda: conn.execute("SELECT email FROM users WHERE email = %s", ["x"]).fetchall()
        )
        return {"code": code, "after": after(conn, "eu")}


def server_error_then_works():
    with connect() as conn:
        code = expect_error(
            lambda: conn.execute(
                "SELECT count(*) / 0 FROM users WHERE tenant_id = %s::uuid", [READERS["us"]]
            ).fetchall()
        )
        return {"code": code, "after": after(conn, "apac")}


def prepared_alternating():
    # prepare_threshold=0: a named server-side statement from the first execute.
    with connect(prepare_threshold=0) as conn:
        return [[r, conn.execute(COUNT, [READERS[r]]).fetchone()[0]] for r in ORDER * 3]


def pipeline_three_regions():
    # P/B/D/E x 3, then Flush when the first result is fetched: one batch.
    with connect() as conn:
        results, code = {}, None
        try:
            with conn.pipeline():
                curs = []
                for r in ORDER:
                    cur = conn.cursor()
                    cur.execute(READ, [READERS[r]])
                    curs.append((r, cur))
                for r, cur in curs:
                    results[r] = emails(cur)
        except psycopg.Error as e:
            code = code_of(e)
        return {"results": results, "code": code, "after": after(conn, "eu")}


def batch_two_regions():
    # executemany in autocommit: P/B/D/E, B/D/E, Sync: one implicit transaction.
    with connect() as conn:
        code = expect_error(
            lambda: conn.cursor().executemany(
                INSERT, [(WRITERS["us"], "batch-1@us"), (WRITERS["eu"], "batch-2@eu")]
            )
        )
        return {"code": code, "after": after(conn, "eu")}


def copy_in():
    with connect() as conn:

        def copy():
            with conn.cursor().copy("COPY users (tenant_id, email, region) FROM STDIN") as cp:
                cp.write_row((WRITERS["us"], "copy-1@us", "us"))
                cp.write_row((WRITERS["us"], "copy-2@us", "us"))

        code = expect_error(copy)
        return {"code": code, "after": after(conn, "eu")}


run(
    [
        ("tenant_reads", tenant_reads),
        ("explicit_region", explicit_region),
        ("gg001_then_works", gg001_then_works),
        ("server_error_then_works", server_error_then_works),
        ("prepared_alternating", prepared_alternating),
        ("pipeline_three_regions", pipeline_three_regions),
        ("insert_without_region", insert_without_region),
        ("commit_rollback", commit_rollback),
        ("batch_two_regions", batch_two_regions),
        ("copy_in", copy_in),
    ]
)
