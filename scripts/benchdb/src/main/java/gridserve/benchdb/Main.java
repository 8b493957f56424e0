package gridserve.benchdb;

import java.net.InetSocketAddress;
import java.util.List;
import java.util.concurrent.CountDownLatch;

import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;

/**
 * mongo-java-server, in memory, on 127.0.0.1:PORT (argument; 0 picks a free port). Prints
 * "listening HOST:PORT" once bound and serves until killed.
 *
 * <p>1.47.0 advertises wire version 8, which PyMongo 4.14 and later refuse: the backend is given
 * a version that reports MongoDB 4.4.0 and wire version 9 instead.
 */
public final class Main {
    private enum Reported implements MongoVersion {
        MONGO_4_4;

        @Override
        public List<Integer> getVersionArray() {
            return List.of(4, 4, 0);
        }

        @Override
        public int getWireVersion() {
            return 9;
        }
    }

    private Main() {}

    public static void main(String[] args) throws InterruptedException {
        int port = args.length > 0 ? Integer.parseInt(args[0]) : 0;
        MemoryBackend backend = new MemoryBackend();
        backend.version(Reported.MONGO_4_4);
        MongoServer server = new MongoServer(backend);
        server.bind("127.0.0.1", port);
        InetSocketAddress address = server.getLocalAddress();
        Runtime.getRuntime().addShutdownHook(new Thread(server::shutdownNow));
        System.out.println("listening " + address.getHostString() + ":" + address.getPort());
        System.out.flush();
        new CountDownLatch(1).await();
    }
}
