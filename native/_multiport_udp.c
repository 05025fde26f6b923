/*
 * _multiport_udp: the UDP relay's data path in C (multiport.io.udppump).
 *
 * Why hand-written C: Python's socket module has no recvmmsg or sendmmsg,
 * and the one wrapper on PyPI (pysockmmsg) is unmaintained; and what the
 * relay spends most on is not the system calls but the Python around them
 * (the reactor's dispatch of every descriptor, the gate, the relay, the
 * session: some 6 us a datagram against socat's 1).  So one object here,
 * a Pump per relay port, moves the datagrams of the sessions it knows
 * without any Python per datagram:
 *
 * - readPort(now): recvmmsg a batch from the port's socket; a datagram
 *   from a client with a session goes out on that session's connected
 *   upstream socket at once (send); the others (new clients) come back to
 *   Python, which judges and relays them as before.
 * - readReplies(now): an epoll descriptor of its own holds every session's
 *   upstream socket, and it is the only one the reactor watches for them;
 *   one call reads a datagram from each ready session and sends the
 *   replies from the port's socket with sendmmsg.
 *
 * A session's failure (ECONNREFUSED after an ICMP port unreachable, or any
 * other error) is handed back to Python, which closes it.  Counts are kept
 * here (datagrams and bytes both ways, drops too_large and send_error) and
 * read by Python (counts()); a session's last activity is the C{now}
 * Python passes into each call.  Nothing here owns a socket: Python opens
 * and closes them, and removes a session before it closes its socket.
 *
 * Every call is short and non-blocking (MSG_DONTWAIT, epoll timeout 0):
 * the GIL is held throughout, so the shared buffers below need no lock.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Datagrams one call reads or sends at most: the other descriptors get
 * their turn, as libuv's UDP reads do. */
#define BATCH 32
/* Room for the largest UDP payload and one byte more, so that nothing
 * real is ever cut short. */
#define SLOT 65536

typedef struct {
    uint16_t family;
    uint16_t port; /* host order */
    uint8_t addr[16];
} Key;

typedef struct {
    Key key;
    int fd;
    double last;
    struct sockaddr_storage peer;
    socklen_t peerLength;
} Session;

typedef struct {
    PyObject_HEAD
    int portFd;
    int family;
    int epollFd;
    Py_ssize_t maxSize;
    /* Open addressing, linear probing, deletion by backward shift: no
     * tombstones to age. */
    Session **table;
    size_t capacity; /* a power of 2 */
    size_t count;
    unsigned long long received, bytesReceived, sent, bytesSent;
    unsigned long long tooLarge, sendError;
} Pump;

/* The buffers of one call's batch, shared by every Pump (see the GIL note
 * above); allocated on first use. */
static char *slots = NULL;

static int
ensureSlots(void)
{
    if (slots == NULL) {
        slots = PyMem_RawMalloc((size_t)BATCH * SLOT);
        if (slots == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    return 0;
}

static size_t
hashKey(const Key *key)
{
    /* Python's own hash of bytes: SipHash keyed with the interpreter's
     * random secret, as dict keys are, so that clients choosing their
     * source addresses can't aim them all at one run of the table (an
     * unkeyed hash such as FNV would let them). */
#if PY_VERSION_HEX >= 0x030E0000
    return (size_t)Py_HashBuffer(key, sizeof(Key));
#else
    return (size_t)_Py_HashBytes(key, sizeof(Key));
#endif
}

static int
keyFromSockaddr(const struct sockaddr_storage *sa, Key *key)
{
    memset(key, 0, sizeof(*key));
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)sa;
        key->family = AF_INET;
        key->port = ntohs(v4->sin_port);
        memcpy(key->addr, &v4->sin_addr, 4);
        return 0;
    }
    if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
        key->family = AF_INET6;
        key->port = ntohs(v6->sin6_port);
        memcpy(key->addr, &v6->sin6_addr, 16);
        return 0;
    }
    return -1;
}

/* The slot of key in the table: where it is, or the empty one where it
 * would go. */
static size_t
findSlot(Pump *self, const Key *key)
{
    size_t mask = self->capacity - 1;
    size_t i = hashKey(key) & mask;
    while (self->table[i] != NULL &&
           memcmp(&self->table[i]->key, key, sizeof(Key)) != 0) {
        i = (i + 1) & mask;
    }
    return i;
}

static Session *
lookup(Pump *self, const Key *key)
{
    return self->table[findSlot(self, key)];
}

static int
grow(Pump *self)
{
    size_t oldCapacity = self->capacity;
    Session **old = self->table;
    Session **table = PyMem_Calloc(oldCapacity * 2, sizeof(Session *));
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->table = table;
    self->capacity = oldCapacity * 2;
    for (size_t i = 0; i < oldCapacity; i++) {
        if (old[i] != NULL) {
            self->table[findSlot(self, &old[i]->key)] = old[i];
        }
    }
    PyMem_Free(old);
    return 0;
}

static void
deleteSlot(Pump *self, size_t i)
{
    size_t mask = self->capacity - 1;
    size_t j = i;
    self->table[i] = NULL;
    for (;;) {
        j = (j + 1) & mask;
        if (self->table[j] == NULL) {
            break;
        }
        size_t home = hashKey(&self->table[j]->key) & mask;
        /* Move j back to i unless its home lies cyclically in (i, j]. */
        int stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            self->table[i] = self->table[j];
            self->table[j] = NULL;
            i = j;
        }
    }
    self->count--;
}

static PyObject *
addressOf(const struct sockaddr_storage *sa)
{
    char text[INET6_ADDRSTRLEN];
    int port;
    if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
        port = ntohs(v6->sin6_port);
    }
    else {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
        port = ntohs(v4->sin_port);
    }
    return Py_BuildValue("(si)", text, port);
}

/* Parse (host, port) given from Python into a socket address of the
 * pump's family. */
static int
parseAddress(Pump *self, const char *host, int port,
             struct sockaddr_storage *sa, socklen_t *length)
{
    memset(sa, 0, sizeof(*sa));
    if (port < 0 || port > 65535) {
        PyErr_Format(PyExc_ValueError, "port %d is not a UDP port number", port);
        return -1;
    }
    if (self->family == AF_INET6) {
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)sa;
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &v6->sin6_addr) != 1) {
            PyErr_Format(PyExc_ValueError, "%s is not an IPv6 address", host);
            return -1;
        }
        *length = sizeof(*v6);
    }
    else {
        struct sockaddr_in *v4 = (struct sockaddr_in *)sa;
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &v4->sin_addr) != 1) {
            PyErr_Format(PyExc_ValueError, "%s is not an IPv4 address", host);
            return -1;
        }
        *length = sizeof(*v4);
    }
    return 0;
}

/* Append ((host, port), code) to *failures, made on first use. */
static int
addFailure(PyObject **failures, const struct sockaddr_storage *sa, int code)
{
    if (*failures == NULL) {
        *failures = PyList_New(0);
        if (*failures == NULL) {
            return -1;
        }
    }
    PyObject *item = Py_BuildValue("(Ni)", addressOf(sa), code);
    if (item == NULL) {
        return -1;
    }
    int result = PyList_Append(*failures, item);
    Py_DECREF(item);
    return result;
}

static int
isBusy(int code)
{
    return code == EAGAIN || code == EWOULDBLOCK || code == ENOBUFS;
}

static PyObject *
Pump_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"portFd", "family", "maxSize", NULL};
    int portFd, family;
    Py_ssize_t maxSize;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iin", names, &portFd,
                                     &family, &maxSize)) {
        return NULL;
    }
    if (family != AF_INET && family != AF_INET6) {
        PyErr_Format(PyExc_ValueError, "family %d is neither AF_INET nor AF_INET6",
                     family);
        return NULL;
    }
    if (maxSize < 0) {
        PyErr_Format(PyExc_ValueError, "maxSize %zd is below 0", maxSize);
        return NULL;
    }
    Pump *self = (Pump *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->portFd = portFd;
    self->family = family;
    self->maxSize = maxSize;
    self->capacity = 16;
    self->table = PyMem_Calloc(self->capacity, sizeof(Session *));
    self->epollFd = epoll_create1(EPOLL_CLOEXEC);
    if (self->table == NULL || self->epollFd < 0) {
        if (self->table == NULL) {
            PyErr_NoMemory();
        }
        else {
            PyErr_SetFromErrno(PyExc_OSError);
        }
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void
clearSessions(Pump *self)
{
    if (self->table == NULL) {
        return;
    }
    for (size_t i = 0; i < self->capacity; i++) {
        Session *s = self->table[i];
        if (s != NULL) {
            if (self->epollFd >= 0) {
                epoll_ctl(self->epollFd, EPOLL_CTL_DEL, s->fd, NULL);
            }
            PyMem_Free(s);
            self->table[i] = NULL;
        }
    }
    self->count = 0;
}

static void
Pump_dealloc(Pump *self)
{
    clearSessions(self);
    PyMem_Free(self->table);
    self->table = NULL;
    if (self->epollFd >= 0) {
        close(self->epollFd);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
checkOpen(Pump *self)
{
    if (self->epollFd < 0) {
        PyErr_SetString(PyExc_ValueError, "the pump is closed");
        return -1;
    }
    return 0;
}

static PyObject *
Pump_fileno(Pump *self, PyObject *unused)
{
    if (checkOpen(self) < 0) {
        return NULL;
    }
    return PyLong_FromLong(self->epollFd);
}

static PyObject *
Pump_add(Pump *self, PyObject *args)
{
    const char *host;
    int port, fd;
    double now;
    if (!PyArg_ParseTuple(args, "siid", &host, &port, &fd, &now)) {
        return NULL;
    }
    if (checkOpen(self) < 0) {
        return NULL;
    }
    struct sockaddr_storage sa;
    socklen_t length;
    if (parseAddress(self, host, port, &sa, &length) < 0) {
        return NULL;
    }
    Key key;
    keyFromSockaddr(&sa, &key);
    if (lookup(self, &key) != NULL) {
        PyErr_Format(PyExc_ValueError, "%s port %d already has a session", host,
                     port);
        return NULL;
    }
    if ((self->count + 1) * 2 > self->capacity && grow(self) < 0) {
        return NULL;
    }
    Session *s = PyMem_Malloc(sizeof(Session));
    if (s == NULL) {
        return PyErr_NoMemory();
    }
    s->key = key;
    s->fd = fd;
    s->last = now;
    s->peer = sa;
    s->peerLength = length;
    struct epoll_event event;
    event.events = EPOLLIN;
    event.data.ptr = s;
    if (epoll_ctl(self->epollFd, EPOLL_CTL_ADD, fd, &event) < 0) {
        PyMem_Free(s);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    self->table[findSlot(self, &key)] = s;
    self->count++;
    Py_RETURN_NONE;
}

/* The session of (host, port) given from Python, its slot in *where; NULL
 * with no exception set if there is none. */
static Session *
sessionOf(Pump *self, PyObject *args, size_t *where)
{
    const char *host;
    int port;
    if (!PyArg_ParseTuple(args, "si", &host, &port)) {
        return NULL;
    }
    struct sockaddr_storage sa;
    socklen_t length;
    if (parseAddress(self, host, port, &sa, &length) < 0) {
        return NULL;
    }
    Key key;
    keyFromSockaddr(&sa, &key);
    *where = findSlot(self, &key);
    return self->table[*where];
}

static PyObject *
Pump_remove(Pump *self, PyObject *args)
{
    size_t where;
    Session *s = sessionOf(self, args, &where);
    if (s == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_FALSE;
    }
    if (self->epollFd >= 0) {
        epoll_ctl(self->epollFd, EPOLL_CTL_DEL, s->fd, NULL);
    }
    deleteSlot(self, where);
    PyMem_Free(s);
    Py_RETURN_TRUE;
}

static PyObject *
Pump_lastSeen(Pump *self, PyObject *args)
{
    size_t where;
    Session *s = sessionOf(self, args, &where);
    if (s == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(s->last);
}

/* Forward one client datagram to its session's upstream, counting it. */
static int
forward(Pump *self, Session *s, const char *data, size_t size, double now,
        PyObject **failures)
{
    if ((Py_ssize_t)size > self->maxSize) {
        self->tooLarge++;
        return 0;
    }
    self->received++;
    self->bytesReceived += size;
    s->last = now;
    if (send(s->fd, data, size, MSG_DONTWAIT) >= 0) {
        return 0;
    }
    int code = errno;
    if (isBusy(code)) {
        self->sendError++;
        return 0;
    }
    if (code == EMSGSIZE) {
        self->tooLarge++;
        return 0;
    }
    return addFailure(failures, &s->peer, code);
}

/* What both reads begin with: the time given, an open pump, its buffers. */
static int
beginRead(Pump *self, PyObject *arg, double *now)
{
    *now = PyFloat_AsDouble(arg);
    if (*now == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    return (checkOpen(self) < 0 || ensureSlots() < 0) ? -1 : 0;
}

static PyObject *
Pump_readPort(Pump *self, PyObject *arg)
{
    double now;
    if (beginRead(self, arg, &now) < 0) {
        return NULL;
    }
    struct mmsghdr messages[BATCH];
    struct iovec vectors[BATCH];
    struct sockaddr_storage peers[BATCH];
    for (int i = 0; i < BATCH; i++) {
        vectors[i].iov_base = slots + (size_t)i * SLOT;
        vectors[i].iov_len = SLOT;
        memset(&messages[i].msg_hdr, 0, sizeof(struct msghdr));
        messages[i].msg_hdr.msg_name = &peers[i];
        messages[i].msg_hdr.msg_namelen = sizeof(peers[i]);
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
    }
    int got = recvmmsg(self->portFd, messages, BATCH, MSG_DONTWAIT, NULL);
    if (got < 0) {
        int code = errno;
        if (code == EAGAIN || code == EWOULDBLOCK || code == EINTR ||
            code == ECONNREFUSED) {
            Py_RETURN_NONE;
        }
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *unknown = NULL, *failures = NULL;
    for (int i = 0; i < got; i++) {
        const char *data = vectors[i].iov_base;
        size_t size = messages[i].msg_len;
        Key key;
        if (keyFromSockaddr(&peers[i], &key) < 0) {
            continue;
        }
        Session *s = (messages[i].msg_hdr.msg_flags & MSG_TRUNC) ? NULL
                                                                  : lookup(self, &key);
        if (s != NULL) {
            if (forward(self, s, data, size, now, &failures) < 0) {
                goto error;
            }
            continue;
        }
        if (unknown == NULL && (unknown = PyList_New(0)) == NULL) {
            goto error;
        }
        PyObject *item = Py_BuildValue("(y#N)", data, (Py_ssize_t)size,
                                       addressOf(&peers[i]));
        if (item == NULL || PyList_Append(unknown, item) < 0) {
            Py_XDECREF(item);
            goto error;
        }
        Py_DECREF(item);
    }
    if (unknown == NULL && failures == NULL) {
        Py_RETURN_NONE;
    }
    if (unknown == NULL && (unknown = PyList_New(0)) == NULL) {
        goto error;
    }
    if (failures == NULL && (failures = PyList_New(0)) == NULL) {
        goto error;
    }
    return Py_BuildValue("(NN)", unknown, failures);
error:
    Py_XDECREF(unknown);
    Py_XDECREF(failures);
    return NULL;
}

/* Send the first count replies queued in messages from the port's socket;
 * a datagram the kernel refuses is dropped and counted, the rest go on. */
static void
flushReplies(Pump *self, struct mmsghdr *messages, int count)
{
    int done = 0;
    while (done < count) {
        int sent = sendmmsg(self->portFd, messages + done, count - done,
                            MSG_DONTWAIT);
        if (sent > 0) {
            for (int i = done; i < done + sent; i++) {
                self->sent++;
                self->bytesSent += messages[i].msg_hdr.msg_iov->iov_len;
            }
            done += sent;
            continue;
        }
        /* messages[done] itself failed: count it, skip it. */
        if (errno == EMSGSIZE) {
            self->tooLarge++;
        }
        else {
            self->sendError++;
        }
        done++;
    }
}

static PyObject *
Pump_readReplies(Pump *self, PyObject *arg)
{
    double now;
    if (beginRead(self, arg, &now) < 0) {
        return NULL;
    }
    struct epoll_event events[BATCH];
    int ready = epoll_wait(self->epollFd, events, BATCH, 0);
    if (ready < 0) {
        if (errno == EINTR) {
            Py_RETURN_NONE;
        }
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    struct mmsghdr messages[BATCH];
    struct iovec vectors[BATCH];
    int queued = 0;
    PyObject *failures = NULL;
    for (int i = 0; i < ready; i++) {
        Session *s = events[i].data.ptr;
        char *buffer = slots + (size_t)queued * SLOT;
        /* One datagram per session and call: the reactor's epoll is
         * level-triggered, so what is left brings the next call, and a
         * second recv would mostly find nothing (one more system call). */
        ssize_t size = recv(s->fd, buffer, SLOT, MSG_DONTWAIT);
        if (size < 0) {
            int code = errno;
            if (code == EAGAIN || code == EWOULDBLOCK || code == EINTR) {
                continue;
            }
            if (addFailure(&failures, &s->peer, code) < 0) {
                flushReplies(self, messages, queued);
                Py_XDECREF(failures);
                return NULL;
            }
            continue;
        }
        s->last = now;
        vectors[queued].iov_base = buffer;
        vectors[queued].iov_len = (size_t)size;
        memset(&messages[queued].msg_hdr, 0, sizeof(struct msghdr));
        messages[queued].msg_hdr.msg_name = &s->peer;
        messages[queued].msg_hdr.msg_namelen = s->peerLength;
        messages[queued].msg_hdr.msg_iov = &vectors[queued];
        messages[queued].msg_hdr.msg_iovlen = 1;
        queued++;
    }
    flushReplies(self, messages, queued);
    if (failures == NULL) {
        Py_RETURN_NONE;
    }
    return failures;
}

static PyObject *
Pump_counts(Pump *self, PyObject *unused)
{
    return Py_BuildValue("(KKKKKK)", self->received, self->bytesReceived,
                         self->sent, self->bytesSent, self->tooLarge,
                         self->sendError);
}

static PyObject *
Pump_clear(Pump *self, PyObject *unused)
{
    clearSessions(self);
    Py_RETURN_NONE;
}

static PyObject *
Pump_close(Pump *self, PyObject *unused)
{
    clearSessions(self);
    if (self->epollFd >= 0) {
        close(self->epollFd);
        self->epollFd = -1;
    }
    Py_RETURN_NONE;
}

static Py_ssize_t
Pump_length(Pump *self)
{
    return (Py_ssize_t)self->count;
}

static PyMethodDef Pump_methods[] = {
    {"fileno", (PyCFunction)Pump_fileno, METH_NOARGS,
     "The pump's epoll descriptor, readable when a session's socket is."},
    {"add", (PyCFunction)Pump_add, METH_VARARGS,
     "add(host, port, fd, now): relay the client (host, port) through the "
     "connected socket fd."},
    {"remove", (PyCFunction)Pump_remove, METH_VARARGS,
     "remove(host, port) -> bool: forget the client's session (before its "
     "socket closes)."},
    {"lastSeen", (PyCFunction)Pump_lastSeen, METH_VARARGS,
     "lastSeen(host, port) -> float | None: the session's last activity."},
    {"readPort", (PyCFunction)Pump_readPort, METH_O,
     "readPort(now) -> None | (unknown, failures): read the port's socket."},
    {"readReplies", (PyCFunction)Pump_readReplies, METH_O,
     "readReplies(now) -> None | failures: relay the sessions' replies."},
    {"counts", (PyCFunction)Pump_counts, METH_NOARGS,
     "(received, bytesReceived, sent, bytesSent, tooLarge, sendError)"},
    {"clear", (PyCFunction)Pump_clear, METH_NOARGS, "Forget every session."},
    {"close", (PyCFunction)Pump_close, METH_NOARGS,
     "Forget every session and close the epoll descriptor."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Pump_sequence = {
    .sq_length = (lenfunc)Pump_length,
};

static PyTypeObject PumpType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_multiport_udp.Pump",
    .tp_doc = "Pump(portFd, family, maxSize): one relay port's C data path.",
    .tp_basicsize = sizeof(Pump),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Pump_new,
    .tp_dealloc = (destructor)Pump_dealloc,
    .tp_methods = Pump_methods,
    .tp_as_sequence = &Pump_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_multiport_udp",
    .m_doc = "The UDP relay's data path in C (see multiport.io.udppump).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__multiport_udp(void)
{
    if (PyType_Ready(&PumpType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&PumpType);
    if (PyModule_AddObject(m, "Pump", (PyObject *)&PumpType) < 0) {
        Py_DECREF(&PumpType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "BATCH", BATCH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
