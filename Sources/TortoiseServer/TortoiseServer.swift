import Logging
import NIOCore
import NIOPosix
import TortoiseStorage

/// The broker: a TCP server speaking protocol v1 over the task store.
///
/// One event loop owns every connection and the dispatch state, so no locks guard the
/// broker's state; the store's writer and flusher threads hand their results back to it.
public final class TortoiseServer: Sendable {
    private let group: MultiThreadedEventLoopGroup
    private let threadPool: NIOThreadPool
    private let store: TaskStore
    private let broker: Broker
    private let channel: Channel
    private let logger: Logger

    /// The address the server listens on.
    public var localAddress: SocketAddress? { channel.localAddress }

    /// A size for the log, in MiB with one decimal.
    private static func mib(_ bytes: Int) -> String { String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
    private static func milliseconds(_ d: Duration) -> Int {
        Int(Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15)
    }

    /// Opens the store and starts listening.
    public static func start(_ config: ServerConfiguration, logger: Logger) async throws -> TortoiseServer {
        var storeConfig = TaskStore.Configuration(directory: config.dataDirectory)
        storeConfig.maxDeliveries = config.maxDeliveries
        storeConfig.maxMapSize = config.maxStorageBytes
        storeConfig.initialMapSize = min(64 << 20, config.maxStorageBytes)
        storeConfig.compactFilesFrom = config.compactFilesFrom
        storeConfig.compactCheckInterval = config.compactCheckSeconds.map { .milliseconds(Int64(($0 * 1000).rounded())) }
        storeConfig.compacted = { [logger] before, after, took in
            logger.info("compacted the store's file from \(Self.mib(before)) to \(Self.mib(after)) while running; changes waited \(Self.milliseconds(took)) ms")
        }
        storeConfig.reopened = { [logger] took in
            logger.info("opened the store's file again to give back the memory of a big REPLAY or DELETE; changes waited \(Self.milliseconds(took)) ms")
        }
        storeConfig.countsRepaired = { [logger] queues in
            logger.warning("the stored counts of \(queues.joined(separator: ", ")) were damaged; counted them again from the tables")
        }
        storeConfig.halted = { [logger, storeHalted = config.storeHalted] error in
            logger.critical("the disk failed a flush; every change is refused from now on: \(error.message)")
            storeHalted?(error.message)
        }
        let store = try TaskStore(storeConfig)
        // The directory is this broker's now (the store holds its lock).
        SpoolFile.removeLeftovers(in: config.dataDirectory)
        if let c = store.compactedAtOpen {
            logger.info("compacted the store's file from \(Self.mib(c.before)) to \(Self.mib(c.after)) (most of it was free)")
        }
        if store.replayedAtOpen > 0 {
            logger.info("applied \(store.replayedAtOpen) group commits from the redo log that the store's file did not have yet")
        }
        if store.recoveredAtOpen > 0 {
            logger.info("returned \(store.recoveredAtOpen) in-flight tasks to the front of their queues")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let threadPool = NIOThreadPool(numberOfThreads: 1)
        threadPool.start()
        let loop = group.next()
        let broker: Broker
        do {
            broker = try Broker(loop: loop, store: store, config: config, logger: logger, threadPool: threadPool)
        } catch {
            store.close()
            try? await group.shutdownGracefully()
            throw error
        }
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.so_keepalive), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 << 10, high: 1 << 20))
            // Small reads, one per readiness: a client that floods commands gets one
            // 8 KiB slice per turn of the event loop, and every other client gets its turn.
            .childChannelOption(.maxMessagesPerRead, value: 1)
            .childChannelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 8192))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ConnectionHandler(broker: broker))
                }
            }
        let channel: Channel
        do {
            channel = try await bootstrap.bind(host: config.host, port: config.port).get()
        } catch {
            store.close()
            try? await threadPool.shutdownGracefully()
            try? await group.shutdownGracefully()
            throw error
        }
        try await loop.submit { broker.start() }.get()
        return TortoiseServer(group: group, threadPool: threadPool, store: store, broker: broker, channel: channel, logger: logger)
    }

    private init(group: MultiThreadedEventLoopGroup, threadPool: NIOThreadPool, store: TaskStore, broker: Broker, channel: Channel, logger: Logger) {
        self.group = group
        self.threadPool = threadPool
        self.store = store
        self.broker = broker
        self.channel = channel
        self.logger = logger
    }

    /// Stops cleanly: stops accepting, returns held tasks to their queues, closes every
    /// connection, finishes and flushes pending commits, and releases the data directory.
    public func shutdown() async {
        try? await channel.close()
        try? await broker.loop.submit { self.broker.shutDown() }.get()
        // Let the connections' close events run before the store stops taking changes.
        try? await broker.loop.submit {}.get()
        let store = self.store
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            // close() blocks until the writer drains: keep it off the event loop and the
            // cooperative pool.
            let t = Thread { store.close(); cont.resume() }
            t.start()
        }
        try? await threadPool.shutdownGracefully()
        try? await group.shutdownGracefully()
    }
}

import Foundation
