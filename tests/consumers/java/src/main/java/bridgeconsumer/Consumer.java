package bridgeconsumer;

import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import software.amazon.awssdk.auth.credentials.AwsCredentials;
import software.amazon.awssdk.auth.credentials.AwsCredentialsProvider;
import software.amazon.awssdk.auth.credentials.AwsSessionCredentials;
import software.amazon.awssdk.auth.credentials.ContainerCredentialsProvider;
import software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider;
import software.amazon.awssdk.auth.credentials.ProfileCredentialsProvider;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.sts.StsClient;
import software.amazon.awssdk.services.sts.model.GetCallerIdentityResponse;

/**
 * Reads spiffe-bridge's AWS outputs through the unmodified AWS SDK for Java v2, configured
 * only by its documented environment variables and files, and prints JSON lines. Never
 * prints a secret: only sha256(access key id + session token).
 *
 * <pre>
 *   java -cp ... bridgeconsumer.Consumer MODE STS_URL WANT TIMEOUT_SECONDS INTERVAL_MS
 *   MODE: default   DefaultCredentialsProvider (the environment picks the source)
 *         container ContainerCredentialsProvider
 *         profile   ProfileCredentialsProvider (AWS_CONFIG_FILE, AWS_PROFILE; credential_process)
 * </pre>
 *
 * Each round: the provider's resolveCredentials() (what the client signs with; the
 * providers cache), then STS GetCallerIdentity at STS_URL. Exit 0 after WANT distinct
 * credentials, 3 at the timeout.
 */
public final class Consumer {
  private Consumer() {}

  public static void main(String[] args) throws Exception {
    String mode = args[0];
    URI sts = URI.create(args[1]);
    int want = Integer.parseInt(args[2]);
    Instant deadline = Instant.now().plusSeconds(Long.parseLong(args[3]));
    long interval = Long.parseLong(args[4]);

    Map<String, Object> start = new LinkedHashMap<>();
    start.put("event", "start");
    start.put("mode", mode);
    Set<String> env = new TreeSet<>();
    for (String name : System.getenv().keySet()) {
      if (name.startsWith("AWS_")) {
        env.add(name);
      }
    }
    start.put("env", new ArrayList<>(env));
    emit(start);

    AwsCredentialsProvider provider;
    switch (mode) {
      case "default":
        provider = DefaultCredentialsProvider.builder().build();
        break;
      case "container":
        provider = ContainerCredentialsProvider.builder().build();
        break;
      case "profile":
        provider = ProfileCredentialsProvider.builder().build();
        break;
      default:
        throw new IllegalArgumentException("unknown mode " + mode);
    }
    StsClient client =
        StsClient.builder()
            .region(Region.US_EAST_1)
            .endpointOverride(sts)
            .credentialsProvider(provider)
            .build();

    Set<String> seen = new HashSet<>();
    while (true) {
      Map<String, Object> fields = new LinkedHashMap<>();
      String fp = null;
      try {
        AwsCredentials creds = provider.resolveCredentials();
        String token = creds instanceof AwsSessionCredentials
            ? ((AwsSessionCredentials) creds).sessionToken() : "";
        fp = sha256(creds.accessKeyId() + token);
        fields.put("event", "credential");
        fields.put("fp", fp);
        fields.put("expires", creds.expirationTime().map(Instant::toString).orElse(null));
        fields.put("provider", creds.providerName().orElse(null));
        try {
          GetCallerIdentityResponse out = client.getCallerIdentity();
          fields.put("call", "ok");
          fields.put("arn", out.arn());
          AwsCredentials after = provider.resolveCredentials();
          String afterToken = after instanceof AwsSessionCredentials
              ? ((AwsSessionCredentials) after).sessionToken() : "";
          fields.put("same_after_call", sha256(after.accessKeyId() + afterToken).equals(fp));
        } catch (RuntimeException e) {
          fields.put("call", "error");
          fields.put("error", e.getClass().getSimpleName() + ": " + e.getMessage());
        }
      } catch (RuntimeException e) {
        fields.put("event", "error");
        fields.put("stage", "credentials");
        fields.put("error", e.getClass().getSimpleName() + ": " + e.getMessage());
      }
      fields.put("t", Instant.now().toString());
      emit(fields);
      if (fp != null && seen.add(fp) && seen.size() >= want) {
        emit(Map.of("event", "done", "distinct", seen.size()));
        System.exit(0);
      }
      if (Instant.now().isAfter(deadline)) {
        emit(Map.of("event", "timeout", "distinct", seen.size()));
        System.exit(3);
      }
      Thread.sleep(Duration.ofMillis(interval).toMillis());
    }
  }

  static String sha256(String value) throws RuntimeException {
    try {
      byte[] digest = MessageDigest.getInstance("SHA-256")
          .digest(value.getBytes(StandardCharsets.UTF_8));
      StringBuilder hex = new StringBuilder();
      for (byte b : digest) {
        hex.append(String.format("%02x", b));
      }
      return hex.toString();
    } catch (java.security.NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }

  static void emit(Map<String, ?> fields) {
    StringBuilder out = new StringBuilder("{");
    boolean first = true;
    for (Map.Entry<String, ?> e : fields.entrySet()) {
      if (!first) {
        out.append(',');
      }
      first = false;
      out.append(quote(e.getKey())).append(':').append(value(e.getValue()));
    }
    System.out.println(out.append('}'));
    System.out.flush();
  }

  static String value(Object v) {
    if (v == null) {
      return "null";
    }
    if (v instanceof Boolean || v instanceof Number) {
      return v.toString();
    }
    if (v instanceof List) {
      List<String> parts = new ArrayList<>();
      for (Object item : (List<?>) v) {
        parts.add(value(item));
      }
      return "[" + String.join(",", parts) + "]";
    }
    return quote(v.toString());
  }

  static String quote(String s) {
    StringBuilder out = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      if (c == '"' || c == '\\') {
        out.append('\\').append(c);
      } else if (c < 0x20) {
        out.append(String.format("\\u%04x", (int) c));
      } else {
        out.append(c);
      }
    }
    return out.append('"').toString();
  }
}
