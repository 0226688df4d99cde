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
            try (ResultSet r = md.getTypeInfo()) {
                check(r.next(), "getTypeInfo");
            }
        }
        System.out.println("pgjdbc ok");
    }
}
