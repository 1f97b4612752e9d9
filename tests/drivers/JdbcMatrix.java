// The driver matrix for pgJDBC (Debian's libpostgresql-jdbc-java);
// tests/drivers.rs compiles it with javac, runs it, checks the output and
// where rows landed. The same protocol as matrix.py: one JSON argument, one
// JSON line per scenario.

import java.io.StringReader;
import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.FutureTask;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.postgresql.copy.CopyManager;
import org.postgresql.core.BaseConnection;

public class JdbcMatrix {
    // The non-local regions first: the first routed query of a connection
    // going to another region is what drivers break on.
    static final String[] ORDER = {"us", "eu", "apac"};
    static final String READ = "SELECT email FROM users WHERE tenant_id = ?::uuid ORDER BY email";
    static final String COUNT = "SELECT count(*) FROM users WHERE tenant_id = ?::uuid";
    static final String INSERT = "INSERT INTO users (tenant_id, email) VALUES (?::uuid, ?)";

    static String cfg;
    static Map<String, String> readers;
    static Map<String, String> writers;

    interface Scenario {
        String run() throws Exception;
    }

    public static void main(String[] args) throws Exception {
        cfg = args[0];
        readers = object("readers");
        writers = object("writers");
        int timeout = Integer.parseInt(field("timeout"));
        Map<String, Scenario> scenarios = new LinkedHashMap<>();
        scenarios.put("tenant_reads", JdbcMatrix::tenantReads);
        scenarios.put("explicit_region", JdbcMatrix::explicitRegion);
        scenarios.put("gg001_then_works", JdbcMatrix::gg001ThenWorks);
        scenarios.put("server_error_then_works", JdbcMatrix::serverErrorThenWorks);
        scenarios.put("prepared_alternating", () -> preparedAlternating(""));
        scenarios.put("prepare_threshold_1", () -> preparedAlternating("&prepareThreshold=1"));
        scenarios.put("insert_without_region", JdbcMatrix::insertWithoutRegion);
        scenarios.put("commit_rollback", JdbcMatrix::commitRollback);
        scenarios.put("batch_two_regions", JdbcMatrix::batchTwoRegions);
        scenarios.put("copy_in", JdbcMatrix::copyIn);
        List<String> wanted = strings("scenarios");
        for (Map.Entry<String, Scenario> s : scenarios.entrySet()) {
            if (!wanted.contains(s.getKey())) {
                continue;
            }
            // A daemon thread per scenario: one that hangs is reported as a
            // timeout and left behind while the next ones run.
            Scenario sc = s.getValue();
            FutureTask<String> task = new FutureTask<>((Callable<String>) sc::run);
            Thread t = new Thread(task);
            t.setDaemon(true);
            t.start();
            String line;
            try {
                line = "\"result\":" + task.get(timeout, TimeUnit.SECONDS);
            } catch (TimeoutException e) {
                line = "\"timeout\":" + timeout;
            } catch (java.util.concurrent.ExecutionException e) {
                line = "\"error\":" + describe(e.getCause());
            }
            System.out.println("{\"scenario\":" + str(s.getKey()) + "," + line + "}");
            System.out.flush();
        }
        System.exit(0);
    }

    static Connection connect(String extra) throws SQLException {
        String url = "jdbc:postgresql://" + field("host") + ":" + field("port") + "/" + field("db")
                + "?sslmode=disable" + extra;
        return DriverManager.getConnection(url, field("user"), field("password"));
    }

    static List<String> emails(Connection c, String tenant) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(READ)) {
            ps.setString(1, tenant);
            List<String> out = new ArrayList<>();
            try (ResultSet rs = ps.executeQuery()) {
                while (rs.next()) {
                    out.add(rs.getString(1));
                }
            }
            return out;
        }
    }

    // The reader's emails, or the error the read raised: the read after an
    // error says whether the connection still works, and what broke if not.
    static String after(Connection c, String region) {
        try {
            return list(emails(c, readers.get(region)));
        } catch (SQLException e) {
            return "{\"error\":" + describe(e) + "}";
        }
    }

    static long count(PreparedStatement ps, String tenant) throws SQLException {
        ps.setString(1, tenant);
        try (ResultSet rs = ps.executeQuery()) {
            rs.next();
            return rs.getLong(1);
        }
    }

    static String tenantReads() throws SQLException {
        try (Connection c = connect("")) {
            StringBuilder b = new StringBuilder("{");
            for (String r : ORDER) {
                b.append(b.length() > 1 ? "," : "").append(str(r)).append(":").append(list(emails(c, readers.get(r))));
            }
            return b.append("}").toString();
        }
    }

    static String explicitRegion() throws SQLException {
        try (Connection c = connect("");
                PreparedStatement ps = c.prepareStatement(
                        "SELECT count(*) FROM users WHERE region = ?::text::region AND email LIKE 'u%'")) {
            StringBuilder b = new StringBuilder("{");
            for (String r : ORDER) {
                b.append(b.length() > 1 ? "," : "").append(str(r)).append(":").append(count(ps, r));
            }
            return b.append("}").toString();
        }
    }

    static String gg001ThenWorks() throws SQLException {
        try (Connection c = connect("")) {
            String code = null;
            try (PreparedStatement ps = c.prepareStatement("SELECT email FROM users WHERE email = ?")) {
                ps.setString(1, "x");
                ps.executeQuery().close();
            } catch (SQLException e) {
                code = e.getSQLState();
            }
            return "{\"code\":" + str(code) + ",\"after\":" + after(c, "eu") + "}";
        }
    }

    static String serverErrorThenWorks() throws SQLException {
        try (Connection c = connect("")) {
            String code = null;
            try (PreparedStatement ps =
                    c.prepareStatement("SELECT count(*) / 0 FROM users WHERE tenant_id = ?::uuid")) {
                ps.setString(1, readers.get("us"));
                ps.executeQuery().close();
            } catch (SQLException e) {
                code = e.getSQLState();
            }
            return "{\"code\":" + str(code) + ",\"after\":" + after(c, "apac") + "}";
        }
    }

    // One PreparedStatement run 9 times: with the default prepareThreshold (5)
    // pgJDBC switches to a named server-side statement at the 5th run.
    static String preparedAlternating(String extra) throws SQLException {
        try (Connection c = connect(extra); PreparedStatement ps = c.prepareStatement(COUNT)) {
            StringBuilder b = new StringBuilder("[");
            for (int i = 0; i < 9; i++) {
                String r = ORDER[i % 3];
                b.append(i > 0 ? "," : "").append("[").append(str(r)).append(",").append(count(ps, readers.get(r))).append("]");
            }
            return b.append("]").toString();
        }
    }

    static String insertWithoutRegion() throws SQLException {
        try (Connection c = connect(""); PreparedStatement ps = c.prepareStatement(INSERT)) {
            ps.setString(1, writers.get("us"));
            ps.setString(2, "insert@us");
            return Integer.toString(ps.executeUpdate());
        }
    }

    static String commitRollback() throws SQLException {
        try (Connection c = connect("")) {
            c.setAutoCommit(false);
            long seen;
            try (PreparedStatement ps = c.prepareStatement(INSERT); PreparedStatement q = c.prepareStatement(COUNT + " AND email = 'commit@us'")) {
                ps.setString(1, writers.get("us"));
                ps.setString(2, "commit@us");
                ps.executeUpdate();
                seen = count(q, writers.get("us"));
                c.commit();
                ps.setString(1, writers.get("apac"));
                ps.setString(2, "rollback@apac");
                ps.executeUpdate();
                c.rollback();
            }
            String read = after(c, "eu");
            c.commit();
            return "{\"seen_in_txn\":" + seen + ",\"after\":" + read + "}";
        }
    }

    // executeBatch in autocommit: Bind/Describe/Execute per row, one Sync.
    static String batchTwoRegions() throws SQLException {
        try (Connection c = connect("")) {
            String code = null;
            try (PreparedStatement ps = c.prepareStatement(INSERT)) {
                ps.setString(1, writers.get("us"));
                ps.setString(2, "batch-1@us");
                ps.addBatch();
                ps.setString(1, writers.get("eu"));
                ps.setString(2, "batch-2@eu");
                ps.addBatch();
                ps.executeBatch();
            } catch (SQLException e) {
                code = sqlState(e);
            }
            return "{\"code\":" + str(code) + ",\"after\":" + after(c, "eu") + "}";
        }
    }

    static String copyIn() throws Exception {
        try (Connection c = connect("")) {
            String code = null;
            String rows = writers.get("us") + "\tcopy-1@us\tus\n" + writers.get("us") + "\tcopy-2@us\tus\n";
            try {
                new CopyManager(c.unwrap(BaseConnection.class))
                        .copyIn("COPY users (tenant_id, email, region) FROM STDIN", new StringReader(rows));
            } catch (SQLException e) {
                code = sqlState(e);
            }
            return "{\"code\":" + str(code) + ",\"after\":" + after(c, "eu") + "}";
        }
    }

    // A BatchUpdateException may carry its SQLSTATE on the next exception.
    static String sqlState(SQLException e) {
        for (SQLException x = e; x != null; x = x.getNextException()) {
            if (x.getSQLState() != null) {
                return x.getSQLState();
            }
        }
        return e.getClass().getSimpleName();
    }

    static String describe(Throwable e) {
        String code = e instanceof SQLException ? sqlState((SQLException) e) : e.getClass().getSimpleName();
        if (e instanceof BatchUpdateException && ((SQLException) e).getNextException() != null) {
            e = ((SQLException) e).getNextException();
        }
        String msg = String.valueOf(e.getMessage());
        return "{\"code\":" + str(code) + ",\"message\":" + str(msg.length() > 500 ? msg.substring(0, 500) : msg) + "}";
    }

    // The argument is flat JSON written by the test: a regex reads it.
    static String field(String name) {
        Matcher m = Pattern.compile("\"" + name + "\":(\"([^\"]*)\"|([0-9]+))").matcher(cfg);
        if (!m.find()) {
            throw new IllegalArgumentException("no " + name + " in " + cfg);
        }
        return m.group(2) != null ? m.group(2) : m.group(3);
    }

    static Map<String, String> object(String name) {
        Matcher m = Pattern.compile("\"" + name + "\":\\{([^}]*)\\}").matcher(cfg);
        if (!m.find()) {
            throw new IllegalArgumentException("no " + name + " in " + cfg);
        }
        Map<String, String> out = new LinkedHashMap<>();
        Matcher kv = Pattern.compile("\"([^\"]*)\":\"([^\"]*)\"").matcher(m.group(1));
        while (kv.find()) {
            out.put(kv.group(1), kv.group(2));
        }
        return out;
    }

    static List<String> strings(String name) {
        Matcher m = Pattern.compile("\"" + name + "\":\\[([^\\]]*)\\]").matcher(cfg);
        if (!m.find()) {
            throw new IllegalArgumentException("no " + name + " in " + cfg);
        }
        List<String> out = new ArrayList<>();
        Matcher s = Pattern.compile("\"([^\"]*)\"").matcher(m.group(1));
        while (s.find()) {
            out.add(s.group(1));
        }
        return out;
    }

    static String list(List<String> xs) {
        StringBuilder b = new StringBuilder("[");
        for (String x : xs) {
            b.append(b.length() > 1 ? "," : "").append(str(x));
        }
        return b.append("]").toString();
    }

    static String str(String s) {
        if (s == null) {
            return "null";
        }
        StringBuilder b = new StringBuilder("\"");
        for (char ch : s.toCharArray()) {
            if (ch == '"' || ch == '\\') {
                b.append('\\').append(ch);
            } else if (ch < 0x20) {
                b.append(String.format("\\u%04x", (int) ch));
            } else {
                b.append(ch);
            }
        }
        return b.append('"').toString();
    }
}
