// pgJDBC (Debian's libpostgresql-jdbc-java) against Sluice: connect, DDL, prepared statements
// with parameters (executeUpdate counts, executeQuery rows), SQLSTATEs, and the metadata calls
// tools make (getTables, getColumns, getTypeInfo). tests/clients.rs compiles and runs it.
//
// Usage: java -cp postgresql.jar:. JdbcClient PORT
import java.sql.*;

public class JdbcClient {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/sluice";
        try (Connection c = DriverManager.getConnection(url, "sluice", "")) {
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TABLE j (id INT PRIMARY KEY, name TEXT, score DOUBLE PRECISION)");
            }
            try (PreparedStatement p = c.prepareStatement("INSERT INTO j VALUES (?, ?, ?)")) {
                for (int i = 0; i < 10; i++) {
                    p.setInt(1, i);
                    p.setString(2, "n" + i);
                    p.setDouble(3, i / 2.0);
                    check(p.executeUpdate() == 1, "executeUpdate counts one row");
                }
            }
            try (PreparedStatement p = c.prepareStatement("SELECT id, name, score FROM j WHERE id >= ? ORDER BY id")) {
                p.setInt(1, 7);
                try (ResultSet r = p.executeQuery()) {
                    int n = 0;
                    while (r.next()) {
                        check(r.getInt(1) == 7 + n, "id");
                        check(r.getString(2).equals("n" + (7 + n)), "name");
                        n++;
                    }
                    check(n == 3, "three rows");
                }
            }
            try (PreparedStatement p = c.prepareStatement("UPDATE j SET score = score + ? WHERE id < ?")) {
                p.setDouble(1, 1.0);
                p.setInt(2, 5);
                check(p.executeUpdate() == 5, "update counts");
            }
            try (Statement s = c.createStatement()) {
                s.execute("SELECT * FROM missing");
                throw new AssertionError("no error");
            } catch (SQLException e) {
                check("42P01".equals(e.getSQLState()), "sqlstate " + e.getSQLState());
            }
            DatabaseMetaData md = c.getMetaData();
            System.out.println("product " + md.getDatabaseProductName() + " " + md.getDatabaseProductVersion());
            try (ResultSet r = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
                boolean found = false;
                while (r.next()) found |= r.getString("TABLE_NAME").equals("j");
                check(found, "getTables lists j");
            }
            try (ResultSet r = md.getColumns(null, "public", "j", "%")) {
                int n = 0;
                while (r.next()) n++;
                check(n == 3, "getColumns: " + n);
            }
            try (ResultSet r = md.getPrimaryKeys(null, "public", "j")) {
                check(r.next() && r.getString("COLUMN_NAME").equals("id"), "getPrimaryKeys");
                check(r.getInt("KEY_SEQ") == 1 && r.getString("PK_NAME").equals("j_pkey"), "pk name");
                check(!r.next(), "one key column");
            }
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TABLE j2 (a INT, b TEXT, c INT, PRIMARY KEY (c, a))");
            }
            try (ResultSet r = md.getPrimaryKeys(null, "public", "j2")) {
                check(r.next() && r.getString("COLUMN_NAME").equals("c") && r.getInt("KEY_SEQ") == 1, "first key column");
                check(r.next() && r.getString("COLUMN_NAME").equals("a") && r.getInt("KEY_SEQ") == 2, "second key column");
                check(!r.next(), "two key columns");
            }
            try (ResultSet r = md.getTypeInfo()) {
                check(r.next(), "getTypeInfo");
            }
        }
        // A subscription read through a cursor: setFetchSize in a transaction makes pgJDBC
        // execute the portal a row at a time (PortalSuspended in between). An Execute returns
        // when it has as many rows as it asked for, so asking for more than have happened waits.
        try (Connection c = DriverManager.getConnection(url, "sluice", "")) {
            try (Statement s = c.createStatement()) {
                s.execute("CREATE MATERIALIZED VIEW high AS SELECT id, name FROM j WHERE id >= 5");
            }
            c.setAutoCommit(false);
            try (PreparedStatement p = c.prepareStatement("SUBSCRIBE TO high")) {
                p.setFetchSize(1);
                try (ResultSet r = p.executeQuery()) {
                    java.util.Set<Integer> ids = new java.util.TreeSet<>();
                    for (int i = 0; i < 5; i++) {
                        check(r.next(), "a row of the snapshot");
                        ids.add(r.getInt("id"));
                    }
                    check(ids.equals(new java.util.TreeSet<>(java.util.List.of(5, 6, 7, 8, 9))), "snapshot " + ids);
                    try (Connection other = DriverManager.getConnection(url, "sluice", "");
                         Statement s = other.createStatement()) {
                        s.executeUpdate("INSERT INTO j VALUES (42, 'late', 0)");
                    }
                    check(r.next() && r.getInt("id") == 42 && r.getInt("sluice_diff") == 1, "the live insert");
                }
            }
            c.rollback();
        }
        System.out.println("pgjdbc ok");
    }
}
