import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TortoiseProtocol

/// One TCP connection to the broker. Commands are pipelined: each is written at once
/// and its reply is matched by order. `MSG` pushes and `ERR TIMEOUT` go to `onPush`.
final class Connection: Sendable {
    let channel: Channel
    private let handler: NIOLoopBound<FrameHandler>

    private init(channel: Channel, handler: FrameHandler) {
        self.channel = channel
        self.handler = NIOLoopBound(handler, eventLoop: channel.eventLoop)
    }

    /// Connects and, when a token is configured, authenticates.
    static func open(
        _ config: TortoiseClientConfiguration,
        onPush: @escaping @Sendable (ServerFrame) -> Void = { _ in },
        onClose: @escaping @Sendable () -> Void = {}
    ) async throws(TortoiseClientError) -> Connection {
        let group = MultiThreadedEventLoopGroup.singleton
        let channel: Channel
        let frames = FrameHandler(onPush: onPush, onClose: onClose)
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(.milliseconds(Int64(config.connectTimeout.components.seconds * 1000)))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelOption(.socketOption(.so_keepalive), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(frames)
                    }
                }
                .connect(host: config.host, port: config.port).get()
        } catch {
            throw TortoiseClientError(.connectionFailed, "cannot reach the broker at \(config.host):\(config.port): \(error)")
        }
        // The handler is the one added above, even if the broker closed the connection
        // meanwhile (the pipeline is then empty): the first command says why.
        let connection: Connection
        do {
            connection = try await channel.eventLoop.submit { Connection(channel: channel, handler: frames) }.get()
        } catch {
            throw TortoiseClientError(.connectionFailed, "cannot set up the connection: \(error)")
        }
        if let token = config.token {
            let reply = try await connection.send(.auth(token))
            guard case .ok = reply else {
                connection.close()
                throw Self.error(from: reply, command: "AUTH")
            }
        }
        return connection
    }

    /// Sends `command` and waits for its reply.
    func send(_ command: Command) async throws(TortoiseClientError) -> ServerFrame {
        let handler = self.handler
        let channel = self.channel
        do {
            return try await withCheckedThrowingContinuation { (cont: CheckedContinuation<ServerFrame, any Error>) in
                channel.eventLoop.execute {
                    handler.value.send(command, cont, channel: channel)
                }
            }
        } catch let e as TortoiseClientError {
            throw e
        } catch {
            throw TortoiseClientError(.connectionLost, "\(error)")
        }
    }

    /// Sends `TOUCH id` every `interval` from the connection's event loop until the
    /// returned task is cancelled (its replies are not awaited). The event loop is not
    /// Swift's cooperative pool: the touches go on while a handler blocks its thread, or
    /// every thread of a pool as narrow as the machine's cores.
    func touch(_ id: UInt64, every interval: Duration) -> RepeatedTask {
        let handler = self.handler
        let channel = self.channel
        let amount = max(TimeAmount(interval), .milliseconds(1))
        return channel.eventLoop.scheduleRepeatedTask(initialDelay: amount, delay: amount) { _ in
            handler.value.sendIgnoringReply(.touch(id), channel: channel)
        }
    }

    /// Sends `command`, expecting `OK`; returns its words.
    func ok(_ command: Command) async throws(TortoiseClientError) -> [String] {
        let reply = try await send(command)
        guard case .ok(let words) = reply else { throw Self.error(from: reply, command: command.verb) }
        return words
    }

    /// Sends `command`, expecting `JSON`; decodes it.
    func json<T: Decodable>(_ command: Command, as type: T.Type) async throws(TortoiseClientError) -> T {
        let reply = try await send(command)
        guard case .json(let body) = reply else { throw Self.error(from: reply, command: command.verb) }
        do {
            return try ReplyJSON.decode(type, from: body)
        } catch {
            throw TortoiseClientError(.protocolViolation, "the broker's \(command.verb) reply is not the JSON expected: \(error)")
        }
    }

    static func error(from reply: ServerFrame, command: String) -> TortoiseClientError {
        if case let .error(code, message) = reply { return TortoiseClientError(.server(code), message) }
        return TortoiseClientError(.protocolViolation, "unexpected reply to \(command): \(reply)")
    }

    /// Closes the connection; commands waiting for replies fail with `connectionLost`.
    func close() {
        channel.close(promise: nil)
    }

    var isActive: Bool { channel.isActive }
}

/// Matches replies to commands in order and hands pushes on. Lives on the channel's loop.
final class FrameHandler: ChannelInboundHandler, @unchecked Sendable { // confined to its channel's loop
    typealias InboundIn = ByteBuffer

    private var buffer = ByteBuffer()
    private var parser = ServerFrameParser()
    /// Who gets each reply, in order: a caller, or nobody (a `TOUCH` sent on a timer).
    private var waiting = CircularBuffer<CheckedContinuation<ServerFrame, any Error>?>()
    private var closed = false
    /// An `ERR` the broker sent while no command waited (say, too many connections)
    /// before it closed the connection: the reason later commands get.
    private var unsolicitedError: TortoiseClientError?
    private var flushScheduled = false
    private let onPush: @Sendable (ServerFrame) -> Void
    private let onClose: @Sendable () -> Void

    init(onPush: @escaping @Sendable (ServerFrame) -> Void, onClose: @escaping @Sendable () -> Void) {
        self.onPush = onPush
        self.onClose = onClose
    }

    func send(_ command: Command, _ cont: CheckedContinuation<ServerFrame, any Error>, channel: Channel) {
        guard !closed else {
            cont.resume(throwing: unsolicitedError ?? TortoiseClientError(.connectionLost, "the connection to the broker is closed"))
            return
        }
        waiting.append(cont)
        write(command, channel: channel)
    }

    /// Sends `command`; its reply is read and dropped. Does nothing once closed.
    func sendIgnoringReply(_ command: Command, channel: Channel) {
        guard !closed else { return }
        waiting.append(nil)
        write(command, channel: channel)
    }

    private func write(_ command: Command, channel: Channel) {
        var b = channel.allocator.buffer(capacity: 64)
        command.write(to: &b)
        channel.write(b, promise: nil)
        // Commands sent in the same turn go out in one write.
        if !flushScheduled {
            flushScheduled = true
            channel.eventLoop.execute { [self] in
                flushScheduled = false
                channel.flush()
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffer.writeBuffer(&bytes)
        do {
            while let frame = try parser.next(from: &buffer) {
                switch frame {
                case .message:
                    onPush(frame)
                case .error(let code, _) where code == ErrorCode.timeout.rawValue:
                    onPush(frame)
                default:
                    if let waiter = waiting.popFirst() {
                        waiter?.resume(returning: frame)
                    } else {
                        if case let .error(code, message) = frame { unsolicitedError = TortoiseClientError(.server(code), message) }
                        onPush(frame)
                    }
                }
            }
        } catch {
            failAll(TortoiseClientError(.protocolViolation, error.message))
            context.close(promise: nil)
        }
        buffer.discardReadBytes()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        failAll(unsolicitedError ?? TortoiseClientError(.connectionLost, "the connection to the broker was lost before its reply"))
        onClose()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    private func failAll(_ e: TortoiseClientError) {
        while let waiter = waiting.popFirst() { waiter?.resume(throwing: e) }
    }
}
