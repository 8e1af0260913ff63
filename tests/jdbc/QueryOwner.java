// Connects to a ClickHouse HTTP endpoint with ClickHouse's official JDBC driver, runs one query and
// prints its rows, one per line, columns separated by tabs (NULL as \N).
// Usage: java -cp 'libs/*' QueryOwner.java JDBC_URL USER PASSWORD QUERY
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.Properties;

public class QueryOwner {
    public static void main(String[] args) throws Exception {
        Properties login = new Properties();
        login.setProperty("user", args[1]);
        login.setProperty("password", args[2]);
        try (Connection connection = DriverManager.getConnection(args[0], login);
             Statement statement = connection.createStatement();
             ResultSet rows = statement.executeQuery(args[3])) {
            int columns = rows.getMetaData().getColumnCount();
            while (rows.next()) {
                StringBuilder line = new StringBuilder();
                for (int i = 1; i <= columns; i++) {
                    String value = rows.getString(i);
                    line.append(i > 1 ? "\t" : "").append(value == null ? "\\N" : value);
                }
                System.out.println(line);
            }
        }
    }
}
