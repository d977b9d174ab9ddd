// A pgJDBC workload for pyproxy's driver tests: one connection per thread, JSON lines on stdout.
//
// Usage: java -cp postgresql.jar:CLASSES Workload URL USER PASSWORD THREADS PREFIX
// Before it runs, the test creates for each thread i a schema PREFIX_i holding a table
// marker(tag text) with the one row 'PREFIX_i', and a table PREFIX_rows(thread, kind, n).
// Every step prints what it saw (values, or the SQLSTATE of an error); the test judges.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import org.postgresql.PGStatement;

public final class Workload {
    private static final int PREPARED_RUNS = 10;
    private static final int REPEATS = 5;
    private static final int BATCH_ROWS = 50;

    private Workload() {}

    public static void main(String[] args) throws Exception {
        String url = args[0];
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        int threads = Integer.parseInt(args[3]);
        String prefix = args[4];
        ExecutorService pool = Executors.newFixedThreadPool(threads);
        List<Future<?>> futures = new ArrayList<>();
        for (int i = 0; i < threads; i++) {
            final int thread = i;
            futures.add(pool.submit(() -> {
                runThread(url, props, prefix, thread);
                return null;
            }));
        }
        int failed = 0;
        for (Future<?> f : futures) {
            try {
                f.get(90, TimeUnit.SECONDS);
            } catch (Exception e) {
                Throwable cause = e.getCause() != null ? e.getCause() : e;
                emit(obj("fatal", cause.toString()));
                failed++;
            }
        }
        pool.shutdownNow();
        System.exit(failed == 0 ? 0 : 1);
    }

    private static void runThread(String url, Properties props, String prefix, int thread)
            throws SQLException, InterruptedException {
        try (Connection conn = DriverManager.getConnection(url, props)) {
            step(thread, "autocommit", () -> List.of(
                    scalar(conn, "SELECT 40 + 2"),
                    scalar(conn, "SELECT current_user"),
                    scalar(conn, "SELECT upper('pgjdbc')")));
            step(thread, "current_schema", () -> repeated(conn, "SELECT current_schema()"));
            step(thread, "application_name", () -> {
                exec(conn, "SET application_name = '" + prefix + "_app_" + thread + "'");
                return repeated(conn, "SELECT current_setting('application_name')");
            });
            step(thread, "search_path", () -> {
                exec(conn, "SET search_path = " + prefix + "_" + thread + ", public");
                return repeated(conn, "SELECT tag FROM marker");
            });
            step(thread, "prepared", () -> prepared(conn, thread));
            step(thread, "commit", () -> transaction(conn, prefix, thread, "commit", true));
            step(thread, "rollback", () -> transaction(conn, prefix, thread, "rollback", false));
            step(thread, "batch", () -> batch(conn, prefix, thread));
            step(thread, "rows", () -> rows(conn, prefix, thread));
            step(thread, "after", () -> scalar(conn, "SELECT 'still usable'"));
        }
    }

    /** A PreparedStatement run past prepareThreshold: results, and whether it is server-side. */
    private static Object prepared(Connection conn, int thread) throws SQLException {
        List<Object> results = new ArrayList<>();
        boolean serverPrepared;
        try (PreparedStatement ps = conn.prepareStatement("SELECT ?::int * 2, ?::text || '!'")) {
            for (int run = 0; run < PREPARED_RUNS; run++) {
                ps.setInt(1, thread * 100 + run);
                ps.setString(2, "t" + thread + "r" + run);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    results.add(List.of(rs.getInt(1), rs.getString(2)));
                }
                pause();
            }
            serverPrepared = ps.unwrap(PGStatement.class).isUseServerPrepare();
        }
        return obj("results", results, "server_prepared", serverPrepared);
    }

    /** Three inserts in one transaction, then COMMIT or ROLLBACK. */
    private static Object transaction(
            Connection conn, String prefix, int thread, String kind, boolean commit)
            throws SQLException {
        conn.setAutoCommit(false);
        try (PreparedStatement ps = conn.prepareStatement(
                "INSERT INTO " + prefix + "_rows (thread, kind, n) VALUES (?, ?, ?)")) {
            for (int n = 0; n < 3; n++) {
                ps.setInt(1, thread);
                ps.setString(2, kind);
                ps.setInt(3, n);
                ps.executeUpdate();
                pause();
            }
            if (commit) {
                conn.commit();
            } else {
                conn.rollback();
            }
        } catch (SQLException e) {
            safeRollback(conn);
            throw e;
        } finally {
            conn.setAutoCommit(true);
        }
        return "done";
    }

    private static Object batch(Connection conn, String prefix, int thread) throws SQLException {
        int total = 0;
        try (PreparedStatement ps = conn.prepareStatement(
                "INSERT INTO " + prefix + "_rows (thread, kind, n) VALUES (?, 'batch', ?)")) {
            for (int n = 0; n < BATCH_ROWS; n++) {
                ps.setInt(1, thread);
                ps.setInt(2, n);
                ps.addBatch();
            }
            for (int count : ps.executeBatch()) {
                total += count;
            }
        }
        return total;
    }

    private static Object rows(Connection conn, String prefix, int thread) throws SQLException {
        Map<String, Object> counts = new LinkedHashMap<>();
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT kind, count(*), sum(n) FROM " + prefix + "_rows WHERE thread = ? "
                        + "GROUP BY kind ORDER BY kind")) {
            ps.setInt(1, thread);
            try (ResultSet rs = ps.executeQuery()) {
                while (rs.next()) {
                    counts.put(rs.getString(1), List.of(rs.getLong(2), rs.getLong(3)));
                }
            }
        }
        return counts;
    }

    private static List<Object> repeated(Connection conn, String sql)
            throws SQLException, InterruptedException {
        List<Object> values = new ArrayList<>();
        for (int i = 0; i < REPEATS; i++) {
            values.add(scalar(conn, sql));
            exec(conn, "SELECT pg_sleep(0.001)"); // other threads' turn on the shared servers
            pause();
        }
        return values;
    }

    private interface Body {
        Object run() throws Exception;
    }

    /** Run one step; print its value, or the SQLSTATE and message of the error it raised. */
    private static void step(int thread, String name, Body body) {
        Object value;
        try {
            value = obj("value", body.run());
        } catch (SQLException e) {
            value = obj("error", e.getSQLState() == null ? "" : e.getSQLState(),
                    "message", String.valueOf(e.getMessage()));
        } catch (Exception e) {
            value = obj("error", "", "message", e.toString());
        }
        Map<String, Object> out = obj("thread", thread, "step", name);
        out.putAll(castMap(value));
        emit(out);
    }

    private static void safeRollback(Connection conn) {
        try {
            conn.rollback();
        } catch (SQLException ignored) {
            // the step reports the first error
        }
    }

    private static Object scalar(Connection conn, String sql) throws SQLException {
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            rs.next();
            return rs.getObject(1);
        }
    }

    private static void exec(Connection conn, String sql) throws SQLException {
        try (Statement st = conn.createStatement()) {
            st.execute(sql);
        }
    }

    private static void pause() {
        try {
            Thread.sleep(ThreadLocalRandom.current().nextInt(3));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    // ---- JSON output ----------------------------------------------------------------------

    private static Map<String, Object> obj(Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put((String) kv[i], kv[i + 1]);
        }
        return m;
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> castMap(Object value) {
        return (Map<String, Object>) value;
    }

    private static synchronized void emit(Map<String, Object> record) {
        System.out.println(json(record));
        System.out.flush();
    }

    private static String json(Object v) {
        if (v == null) {
            return "null";
        }
        if (v instanceof Boolean || v instanceof Integer || v instanceof Long) {
            return v.toString();
        }
        if (v instanceof Map<?, ?> m) {
            List<String> parts = new ArrayList<>();
            for (Map.Entry<?, ?> e : m.entrySet()) {
                parts.add(quote(String.valueOf(e.getKey())) + ":" + json(e.getValue()));
            }
            return "{" + String.join(",", parts) + "}";
        }
        if (v instanceof List<?> l) {
            List<String> parts = new ArrayList<>();
            for (Object o : l) {
                parts.add(json(o));
            }
            return "[" + String.join(",", parts) + "]";
        }
        return quote(v.toString());
    }

    private static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                default -> {
                    if (c < 0x20) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
                }
            }
        }
        return b.append('"').toString();
    }
}
