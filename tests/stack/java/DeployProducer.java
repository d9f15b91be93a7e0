// Publishes deployment events the way a CI/CD pipeline on the JVM does: with the official
// kafka-clients producer and the compression codec a team chose. Part of rollbackd's test stack
// (tests/stack/java_producer.py compiles it against the stack's own kafka-clients jar).
//
// Usage: java DeployProducer <bootstrap> <topic>   and on stdin one line per event:
//   <compression.type>\t<key>\t<value>
// Each run of consecutive events of one codec goes through one producer (one batch per flush), in order.
// Prints "sent <codec> <partition> <offset>" per acknowledged event; exits non-zero on any failure.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.StringSerializer;

public final class DeployProducer {
    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: DeployProducer <bootstrap> <topic> < codec\\tkey\\tvalue lines");
            System.exit(2);
        }
        List<List<String[]>> runs = new ArrayList<>();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line; (line = in.readLine()) != null; ) {
            if (line.isEmpty()) continue;
            String[] parts = line.split("\t", 3);
            if (runs.isEmpty() || !runs.get(runs.size() - 1).get(0)[0].equals(parts[0])) {
                runs.add(new ArrayList<>());
            }
            runs.get(runs.size() - 1).add(parts);
        }
        for (List<String[]> run : runs) {
            String codec = run.get(0)[0];
            Properties props = new Properties();
            props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
            props.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
            props.put(ProducerConfig.ACKS_CONFIG, "all");
            props.put(ProducerConfig.LINGER_MS_CONFIG, "50"); // the events of one codec share a batch
            props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
            props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
            try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
                List<Future<RecordMetadata>> sent = new ArrayList<>();
                for (String[] event : run) {
                    sent.add(producer.send(new ProducerRecord<>(args[1], event[1], event[2])));
                }
                producer.flush();
                for (Future<RecordMetadata> f : sent) {
                    RecordMetadata m = f.get(30, TimeUnit.SECONDS);
                    System.out.println("sent " + codec + " " + m.partition() + " " + m.offset());
                }
            }
        }
    }
}
