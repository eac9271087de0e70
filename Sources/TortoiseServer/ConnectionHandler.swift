import Logging
import NIOCore
import TortoiseProtocol
import TortoiseStorage

/// One client connection: parses its commands, answers them in order, and, when it
/// subscribes, is a worker holding at most one task. Confined to the broker's loop.
final class ConnectionHandler: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = Never
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = IOData

    let broker: Broker
    private var context: ChannelHandlerContext?
    private var parser: CommandParser
    private var inbound = ByteBuffer()
    private var replies = ReplyQueue()
    private var authenticated: Bool
    private var stopParsing = false
    private var readPending = false
    private var inReadLoop = false
    private var needsFlush = false
    private var needsDrain = false

    // Worker state.
    /// The queues this connection works on, in the order it subscribed (the order in
    /// which it looks for its next task), and each one's place in that list.
    private(set) var subscriptions: [Dispatcher.QueueState] = []
    private var subscribed: [String: Int] = [:]
    /// Where the next look for a task among ``subscriptions`` starts.
    private var nextLook = 0
    private var held: TaskID?
    /// The queue of the task held (or last held).
    private var heldQueue = ""
    /// When the held task's ack timeout runs out (each delivery and TOUCH moves it).
    private var heldDeadline = NIODeadline.distantFuture
    /// At most one timer, armed for the deadline it saw: when it fires before a moved
    /// deadline, it arms itself again. Scheduling and cancelling a timer for every
    /// delivery was about 3% of the event loop's instructions per task.
    private var heldTimer: Scheduled<Void>?
    /// From the configuration, read on every command.
    private let maxPendingReplies: Int
    private let ackTimeout: TimeAmount?
    private var epoch: UInt64 = 0
    private(set) var closed = false
    private var authTimer: Scheduled<Void>?

    init(broker: Broker) {
        self.broker = broker
        self.parser = CommandParser(maxBody: broker.config.maxBody)
        self.authenticated = broker.config.token == nil
        self.maxPendingReplies = broker.config.maxPendingReplies
        self.ackTimeout = broker.config.ackTimeoutSeconds > 0 ? .seconds(Int64(broker.config.ackTimeoutSeconds)) : nil
    }

    /// Whether this worker is idle since it was marked so with `epoch`.
    func isIdle(epoch: UInt64) -> Bool {
        !closed && held == nil && self.epoch == epoch
    }

    // MARK: Channel events

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        guard broker.register(self) else {
            var b = context.channel.allocator.buffer(capacity: 64)
            ServerFrame.error(code: ErrorCode.internal.rawValue, message: "too many connections (the limit is \(broker.config.maxConnections)); try again later").write(to: &b)
            closed = true
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.byteBuffer(b))).whenComplete { _ in channel.close(promise: nil) }
            return
        }
        if !authenticated && broker.config.authTimeoutSeconds > 0 {
            // A connection that never authenticates does not get to hold a slot for ever.
            let seconds = broker.config.authTimeoutSeconds
            let channel = context.channel
            authTimer = context.eventLoop.scheduleTask(in: .seconds(Int64(seconds))) { [self] in
                guard !authenticated, !closed else { return }
                var b = channel.allocator.buffer(capacity: 80)
                ServerFrame.error(code: ErrorCode.noAuth.rawValue, message: "no AUTH within \(seconds)s; closing").write(to: &b)
                stopParsing = true
                channel.writeAndFlush(b).whenComplete { _ in channel.close(promise: nil) }
            }
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        connectionLost()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if inbound.readableBytes == 0 {
            inbound = bytes
        } else {
            inbound.writeBuffer(&bytes)
        }
        // A turn already waits for this connection: the input joins it (one turn per
        // connection between two polls of the loop).
        if turnScheduled { return }
        processInbound()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            flushReplies(resumeReading: false)
            resume()
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    /// Enough unparsed input is buffered: read no more until it is parsed (a body being
    /// read may always arrive whole).
    private var inputFull: Bool {
        inbound.readableBytes >= max(Self.maxBufferedInput, parser.bodyBytesWanted + 1024)
    }

    func read(context: ChannelHandlerContext) {
        if throttled || inputFull {
            readPending = true
        } else {
            context.read()
        }
    }

    /// The client has too many replies outstanding, or is not reading what it was sent.
    private var throttled: Bool {
        replies.count >= maxPendingReplies || !(context?.channel.isWritable ?? true)
    }

    /// Unparsed input past which the broker stops reading from the client.
    private static let maxBufferedInput = 16 << 10
    /// Commands handled in one turn before other connections get theirs.
    private static let commandsPerTurn = 2048
    private var turnScheduled = false
    /// Commands answered at once (PING, SUB, errors: no store, no wait) in this turn, and
    /// the most a turn answers: a client flooding them gets its share of the loop, not
    /// the whole of it.
    private var answeredInTurn = 0
    private static let answeredPerTurn = 64

    private func resume() {
        guard let context, !closed else { return }
        processInbound()
        if !throttled && readPending && !inputFull {
            readPending = false
            context.read()
        }
    }

    private func processInbound() {
        inReadLoop = true
        answeredInTurn = 0
        var handled = 0
        while !stopParsing && !throttled, handled < Self.commandsPerTurn, answeredInTurn < Self.answeredPerTurn,
              let result = parser.next(from: &inbound) {
            handled += 1
            switch result {
            case .success(let command): handle(command)
            case .failure(let error):
                if error.closes { stopParsing = true }
                replyNow(.error(error), closeAfter: error.closes)
            }
        }
        let stoppedEarly = throttled || answeredInTurn >= Self.answeredPerTurn
        if inbound.readableBytes == 0 {
            inbound.clear()
        } else if inbound.readerIndex > 65536 && inbound.readerIndex > inbound.readableBytes {
            inbound.discardReadBytes()
        }
        inReadLoop = false
        if needsDrain {
            needsDrain = false
            flushReplies(resumeReading: false)
        }
        if needsFlush, let context {
            needsFlush = false
            context.flush()
        }
        guard let context, !stopParsing, !throttled else { return }
        // The turn ended at its share of commands answered at once, or at the window of
        // pending replies, which were written since: the commands already read go on in
        // the next turn, as no read may come to restart them (the client may be waiting
        // for these very replies).
        if handled == Self.commandsPerTurn || (stoppedEarly && inbound.readableBytes > 0) {
            // More may be waiting: continue after the other connections had a turn (a
            // timed task, so that the loop polls for I/O in between).
            guard !turnScheduled else { return }
            turnScheduled = true
            context.eventLoop.scheduleTask(in: .milliseconds(1)) { [self] in
                turnScheduled = false
                resume()
            }
        } else if readPending && !inputFull {
            readPending = false
            context.read()
        }
    }

    // MARK: Replies

    private func replyNow(_ frame: ServerFrame, closeAfter: Bool = false) {
        answeredInTurn += 1
        let slot = replies.reserve()
        slot.frame = frame
        slot.closeAfter = closeAfter
        // Inside a turn of parsing, replies are gathered and written once at its end.
        if inReadLoop { needsDrain = true } else { flushReplies() }
    }

    private func fill(_ slot: ReplyQueue.Slot, _ frame: ServerFrame) {
        slot.frame = frame
        // In a pass over store completions (a group commit confirms many commands at
        // once), the replies are written once at the end of the pass: one buffer and
        // one write to the socket per connection, not one per reply.
        if broker.deferReplies(of: self) { return }
        flushReplies()
    }

    /// Set while this connection waits for the end of the broker's completion pass.
    var repliesDeferred = false

    /// Writes the replies that came during a completion pass (called by the broker).
    func flushDeferredReplies() {
        repliesDeferred = false
        flushReplies()
    }

    private func flushReplies(resumeReading: Bool = true) {
        guard let context else { return }
        let wasThrottled = throttled
        var wrote = false
        while true {
            let (frames, close) = replies.drainReady()
            if !frames.isEmpty {
                var b = context.channel.allocator.buffer(capacity: 64 * frames.count)
                for (frame, spooled) in frames {
                    guard let spooled else {
                        frame.write(to: &b)
                        continue
                    }
                    // A spooled body goes from its file to the socket (sendfile), between
                    // the bytes before it and its closing line.
                    ServerFrame.writeJSONHeader(length: spooled.length, to: &b)
                    context.write(wrapOutboundOut(.byteBuffer(b)), promise: nil)
                    let handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: spooled.takeDescriptor())
                    let region = FileRegion(fileHandle: handle, readerIndex: 0, endIndex: spooled.length)
                    context.write(wrapOutboundOut(.fileRegion(region))).whenComplete { _ in try? handle.close() }
                    b = context.channel.allocator.buffer(capacity: 64)
                    b.writeStaticString("\r\n")
                }
                if close {
                    stopParsing = true
                    let channel = context.channel
                    context.writeAndFlush(wrapOutboundOut(.byteBuffer(b))).whenComplete { _ in channel.close(promise: nil) }
                    return
                }
                context.write(wrapOutboundOut(.byteBuffer(b)), promise: nil)
                wrote = true
            }
            // A read waiting for the earlier replies runs now that it is first, unless the
            // client is not taking what it was sent: it runs once the client reads (a
            // client pipelining FAILEDs without reading would otherwise have every reply
            // spooled to disk at once).
            guard let head = replies.head, head.frame == nil, head.onHead != nil, context.channel.isWritable,
                  let action = head.onHead else { break }
            head.onHead = nil
            action(head)
            if head.frame == nil { break }
        }
        guard wrote else { return }
        if inReadLoop { needsFlush = true } else { context.flush() }
        if resumeReading && wasThrottled && !inReadLoop { resume() }
    }

    /// Answers a read once every earlier command of this connection has its reply, so
    /// that it sees their effects. `action` fills the slot, now or later.
    private func whenEarlierRepliesAreDone(_ action: @escaping (ReplyQueue.Slot) -> Void) {
        let slot = replies.reserve()
        slot.onHead = action
        if inReadLoop { needsDrain = true } else { flushReplies() }
    }

    private func internalError(_ e: StorageError) -> ServerFrame {
        .error(code: ErrorCode.internal.rawValue, message: e.message)
    }

    // MARK: Commands

    private func handle(_ command: Command) {
        if !authenticated {
            switch command {
            case .auth, .ping, .quit: break
            default:
                replyNow(.error(ProtocolError(.noAuth, "authentication required: send AUTH <token> first")))
                return
            }
        }
        switch command {
        case .ping:
            replyNow(.ok(["PONG"]))
        case .auth(let token):
            if let expected = broker.config.token {
                if constantTimeEquals(token, expected) {
                    authenticated = true
                    authTimer?.cancel()
                    replyNow(.ok([]))
                } else {
                    replyNow(.error(ProtocolError(.denied, "wrong token")))
                }
            } else {
                replyNow(.ok([]))
            }
        case .quit:
            stopParsing = true
            replyNow(.ok([]), closeAfter: true)
        case let .put(queue, payload):
            let slot = replies.reserve()
            // If a worker waits for this queue, the new task goes to it as soon as it is
            // committed, while its flush runs; the producer's OK waits for the flush.
            // Otherwise the task counts as available once it is durable: hearing of the
            // commit as well would wake the event loop a second time for each PUT.
            let broker = broker
            let early = broker.dispatcher.mayHaveIdleWorker(queue)
            var committed: (@Sendable (StoreOutcome) -> Void)?
            if early { committed = { _ in broker.tasksAvailable(queue, 1) } }
            broker.submit(.put(queue: queue, payload: Array(payload.readableBytesView)), committed: committed) { [self] result in
                switch result {
                case .success(.put(let id)):
                    if !early { broker.tasksAvailable(queue, 1) }
                    fill(slot, .ok([String(id)]))
                case .success: fill(slot, .ok([]))
                case .failure(let e): fill(slot, internalError(e))
                }
            }
        case .sub(let queue):
            if subscribed[queue] == nil {
                guard subscriptions.count < broker.config.maxSubscriptions else {
                    replyNow(.error(ProtocolError(.badArgument, "SUB \(queue): this connection already works on \(subscriptions.count) queues, the most the broker allows (--max-subscriptions)")))
                    break
                }
                subscribed[queue] = subscriptions.count
                let q = broker.dispatcher.subscribe(queue)
                subscriptions.append(q)
                if held == nil { q.markIdle(self, epoch: epoch) }
            }
            replyNow(.ok([]))
            broker.dispatch(queue)
        case .ack(let id):
            settle(id, .ack(id))
        case let .nack(id, error):
            settle(id, .nack(id, error: error))
        case let .requeue(id, delay):
            // A delay of 0 is none: the task goes back to the front.
            settle(id, .requeue(id, readyAt: delay.flatMap { $0 == 0 ? nil : currentMillis() + Millis(clamping: $0) }))
        case .touch(let id):
            guard held == id else {
                replyNow(.error(Self.notHeld(id)))
                return
            }
            startAckTimer()
            replyNow(.ok([]))
        case .stats:
            whenEarlierRepliesAreDone { [self] slot in
                let live = broker.liveStats()
                let store = broker.store
                runRead({ () throws(StorageError) in .memory(ReplyJSON.encode(try Broker.stats(store, live: live))) }, into: slot)
            }
        case let .failed(limit, text):
            guard let query = parseQuery(text) else { return }
            let store = broker.store
            let spool = newSpool
            // One failure at a time from the store to the spool: the reply may be far
            // bigger than memory should hold.
            runRead { () throws(StorageError) in
                let out = spool()
                try out.append("{\"tasks\":[")
                let total = try store.failed(query, limit: limit) { (f) throws(StorageError) in
                    try out.appendElement(FailedTaskInfo(f))
                }
                try out.append("],\"total\":\(total)}".utf8)
                return try out.finish()
            }
        case let .errors(limit, text):
            guard let query = parseQuery(text) else { return }
            let store = broker.store
            let spool = newSpool
            runRead { () throws(StorageError) in
                let groups = try store.errorGroups(query, limit: limit)
                let out = spool()
                try out.append("{\"groups\":[")
                for g in groups { try out.appendElement(ErrorGroupInfo(g)) }
                try out.append("]}")
                return try out.finish()
            }
        case .replay(let text):
            guard let query = parseQuery(text) else { return }
            let slot = replies.reserve()
            broker.submit(.replay(query)) { [self] result in
                switch result {
                case .success(.replayed(let perQueue)):
                    fill(slot, .ok([String(perQueue.values.reduce(0, +))]))
                    for (q, n) in perQueue { broker.tasksAvailable(q, n) }
                case .success: fill(slot, .ok(["0"]))
                case .failure(let e): fill(slot, internalError(e))
                }
            }
        case .delete(let text):
            guard let query = parseQuery(text) else { return }
            let slot = replies.reserve()
            broker.submit(.delete(query)) { [self] result in
                switch result {
                case .success(.deleted(let n)): fill(slot, .ok([String(n)]))
                case .success: fill(slot, .ok(["0"]))
                case .failure(let e): fill(slot, internalError(e))
                }
            }
        }
    }

    private func parseQuery(_ text: String) -> FailedQuery? {
        switch QueryParser.parse(text, now: currentMillis()) {
        case .success(let q): return q
        case .failure(let e):
            replyNow(.error(e))
            return nil
        }
    }

    /// Makes the spool of a `JSON` reply's body (on the read pool): a file in the data
    /// directory past the configured size.
    private var newSpool: @Sendable () -> ReplySpool {
        let (directory, memoryLimit) = (broker.config.dataDirectory, broker.config.replyMemoryLimit)
        return { ReplySpool(directory: directory, memoryLimit: memoryLimit) }
    }

    /// Runs a read-only search on the thread pool; its JSON answers in order.
    private func runRead(_ body: @escaping @Sendable () throws(StorageError) -> ReplySpool.Body) {
        whenEarlierRepliesAreDone { [self] slot in runRead(body, into: slot) }
    }

    private func runRead(_ body: @escaping @Sendable () throws(StorageError) -> ReplySpool.Body, into slot: ReplyQueue.Slot) {
        let loop = broker.loop
        broker.threadPool.submit { state in
            let result: Result<ReplySpool.Body, StorageError>
            if case .cancelled = state {
                result = .failure(StorageError(.closed, "the broker is shutting down"))
            } else {
                do throws(StorageError) { result = .success(try body()) } catch { result = .failure(error) }
            }
            loop.execute { [self] in
                switch result {
                case .success(.memory(let json)): fill(slot, .json(json))
                case .success(.file(let file)):
                    slot.spooled = file
                    fill(slot, .json(ByteBuffer()))
                case .failure(let e): fill(slot, internalError(e))
                }
            }
        }
    }

    /// A change to a held task failed in the store: say so, and give the task back.
    private func storeFailed(_ e: StorageError, slot: ReplyQueue.Slot, id: TaskID, queue: String) {
        if e.code == .notFound {
            fill(slot, .error(Self.notHeld(id)))
        } else {
            fill(slot, internalError(e))
            broker.release(id, of: queue)
        }
    }

    // MARK: Worker

    static func notHeld(_ id: TaskID) -> ProtocolError {
        ProtocolError(.notFound, "task \(id) is not held by this connection")
    }

    /// The worker is done with its task, one way or another (ACK, NACK, REQUEUE): change
    /// it in the store, answer once that is durable, and become free for the next task at
    /// once, without waiting for this flush. A task that a REQUEUE without delay returns to
    /// the front holds its queue back until that is committed (`Broker.returnToFront`),
    /// so that no worker is given what stood behind it first.
    private func settle(_ id: TaskID, _ op: StoreOperation) {
        guard takeHeld(id) else { return }
        let queue = heldQueue
        let slot = replies.reserve()
        let completion: @Sendable (Result<StoreOutcome, StorageError>) -> Void = { [self] result in
            switch result {
            case .success: fill(slot, .ok([]))
            case .failure(let e): storeFailed(e, slot: slot, id: id, queue: queue)
            }
        }
        switch op {
        case .requeue(_, nil):
            broker.returnToFront(op, id: id, of: queue, completion)
        case .requeue:
            // Delayed: it does not touch the front. It may be due again before its flush
            // ends, so the broker hears of it at commit.
            broker.submit(op, committed: { [broker] outcome in
                if case .returned(let to) = outcome { broker.taskReturned(to) }
            }, completion)
        default:
            // The worker's next task goes out first: queueing this change may wake the
            // writer (a system call), and the next `MSG` need not wait for that.
            becomeIdle()
            broker.submit(op, completion)
            return
        }
        becomeIdle()
    }

    /// Checks that this connection holds `id` and lets go of it (the caller then changes it).
    private func takeHeld(_ id: TaskID) -> Bool {
        guard held == id else {
            replyNow(.error(Self.notHeld(id)))
            return false
        }
        held = nil
        return true
    }

    /// The worker is free: it joins the idle line of each of its queues and may get a task at once.
    func becomeIdle() {
        guard !closed, !subscriptions.isEmpty, held == nil else { return }
        epoch &+= 1
        for q in subscriptions { q.markIdle(self, epoch: epoch) }
        // Only a queue with tasks to hand out is worth a look. The look starts after the
        // queue that gave this worker its last task (set by deliver): a worker of several
        // queues takes from them in turn, and a queue with a backlog cannot starve the others.
        let n = subscriptions.count
        for k in 0..<n {
            let i = (nextLook + k) % n
            guard subscriptions[i].available > 0 else { continue }
            broker.dispatch(subscriptions[i].name)
            if held != nil { break }
        }
    }

    func becomeIdleLater(in delay: TimeAmount) {
        broker.loop.scheduleTask(in: delay) { [self] in becomeIdle() }
    }

    func deliver(_ task: DeliveredTask) {
        held = task.id
        heldQueue = task.queue
        // The next look for a task starts after this queue (see becomeIdle).
        if subscriptions.count == 1 {
            nextLook = 1
        } else if let i = subscribed[task.queue] {
            nextLook = i + 1
        }
        guard let context else { return }
        // Replies to the commands before this push go out first (e.g. SUB's OK).
        if needsDrain {
            needsDrain = false
            flushReplies(resumeReading: false)
        }
        var b = context.channel.allocator.buffer(capacity: task.payload.count + task.queue.utf8.count + 72)
        ServerFrame.writeMessage(id: task.id, queue: task.queue, delivery: task.delivery, payload: task.payload, to: &b)
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(b)), promise: nil)
        startAckTimer()
    }

    /// Starts (or moves) the held task's ack timeout.
    private func startAckTimer() {
        guard let ackTimeout else { return }
        heldDeadline = .now() + ackTimeout
        if heldTimer == nil { armAckTimer() }
    }

    private func armAckTimer() {
        heldTimer = broker.loop.scheduleTask(deadline: heldDeadline) { [self] in ackTimerFired() }
    }

    private func ackTimerFired() {
        heldTimer = nil
        guard let id = held, !closed, let context else { return }
        if NIODeadline.now() < heldDeadline {
            armAckTimer()
            return
        }
        held = nil
        broker.logger.warning("a worker held task \(id) past the ack timeout of \(broker.config.ackTimeoutSeconds)s; returning it and closing the connection")
        broker.release(id, of: heldQueue)
        var b = context.channel.allocator.buffer(capacity: 80)
        ServerFrame.error(code: ErrorCode.timeout.rawValue, message: "\(id) held longer than the ack timeout of \(broker.config.ackTimeoutSeconds)s").write(to: &b)
        stopParsing = true
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(b))).whenComplete { _ in channel.close(promise: nil) }
    }

    private func connectionLost() {
        guard !closed else { return }
        closed = true
        heldTimer?.cancel()
        authTimer?.cancel()
        if let id = held {
            held = nil
            broker.release(id, of: heldQueue)
        }
        for q in subscriptions { broker.dispatcher.unsubscribe(q) }
        // The queues' idle lines may still name this connection: let go of the queues so
        // that neither keeps the other alive.
        subscriptions = []
        subscribed = [:]
        broker.unregister(self)
    }

    func closeForShutdown() {
        connectionLost()
        context?.close(promise: nil)
    }
}

/// Compares two tokens in time that depends only on their lengths.
func constantTimeEquals(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8)
    let y = Array(b.utf8)
    var diff = UInt8(x.count == y.count ? 0 : 1)
    let n = max(x.count, y.count)
    for i in 0..<n {
        let p = i < x.count ? x[i] : 0
        let q = i < y.count ? y[i] : 0
        diff |= p ^ q
    }
    return diff == 0
}
