/*
 * storage_file.c — the Linux port's moat_storage: each area is a file of
 * fixed size, allocated in full when it is created (posix_fallocate), so a
 * later write never fails for want of disk space in the middle of a record.
 * Writes are pwrite(2) at the offset asked for; sync is fdatasync(2), which
 * is what makes the queue's "durable when push returns" true on Linux.
 * A new area reads as zeros.
 */
#define _GNU_SOURCE /* O_CLOEXEC, fdatasync in strict C11 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <moat/linux.h>

static const char *const area_names[MOAT_AREA_COUNT] = {"queue.area", "state.area"};

static void say(char *err, size_t errlen, const char *what, const char *path, int e)
{
    if (err && errlen)
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(e));
}

static size_t st_size(void *ctx, unsigned area)
{
    const moat_linux_storage *st = ctx;
    return area < MOAT_AREA_COUNT ? st->size[area] : 0;
}

static bool in_area(const moat_linux_storage *st, unsigned area, size_t off, size_t len)
{
    return area < MOAT_AREA_COUNT && st->fd[area] >= 0 && off <= st->size[area] &&
           len <= st->size[area] - off;
}

static moat_status st_read(void *ctx, unsigned area, size_t off, uint8_t *buf, size_t len)
{
    moat_linux_storage *st = ctx;
    if (!in_area(st, area, off, len))
        return MOAT_ERR_ARG;
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(st->fd[area], buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return MOAT_ERR_IO;
        done += (size_t)n;
    }
    return MOAT_OK;
}

static moat_status st_write(void *ctx, unsigned area, size_t off, const uint8_t *buf, size_t len)
{
    moat_linux_storage *st = ctx;
    if (!in_area(st, area, off, len))
        return MOAT_ERR_ARG;
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(st->fd[area], buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return MOAT_ERR_IO;
        done += (size_t)n;
    }
    return MOAT_OK;
}

static moat_status st_sync(void *ctx, unsigned area)
{
    moat_linux_storage *st = ctx;
    if (area >= MOAT_AREA_COUNT || st->fd[area] < 0)
        return MOAT_ERR_ARG;
    while (fdatasync(st->fd[area]) != 0) {
        if (errno != EINTR)
            return MOAT_ERR_IO;
    }
    return MOAT_OK;
}

/* Sync the directory so a newly created file's name survives power loss. */
static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static moat_status open_area(moat_linux_storage *st, const char *dir, unsigned area, size_t size,
                             char *err, size_t errlen)
{
    char path[4096];
    int n = snprintf(path, sizeof(path), "%s/%s", dir, area_names[area]);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        if (err && errlen)
            snprintf(err, errlen, "storage directory name too long");
        return MOAT_ERR_ARG;
    }
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
        struct stat sb;
        if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            say(err, errlen, "cannot use", path, errno ? errno : EINVAL);
            close(fd);
            return MOAT_ERR_IO;
        }
        if ((uint64_t)sb.st_size != (uint64_t)size) {
            if (err && errlen)
                snprintf(err, errlen, "%s has %lld bytes, not the %zu configured", path,
                         (long long)sb.st_size, size);
            close(fd);
            return MOAT_ERR_ARG;
        }
        st->fd[area] = fd;
        st->size[area] = size;
        return MOAT_OK;
    }
    if (errno != ENOENT) {
        say(err, errlen, "cannot open", path, errno);
        return MOAT_ERR_IO;
    }
    /* Created under a temporary name and renamed once full size and synced:
     * a crash during creation never leaves a short area behind. */
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.new", path);
    fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        say(err, errlen, "cannot create", tmp, errno);
        return MOAT_ERR_IO;
    }
    int e = posix_fallocate(fd, 0, (off_t)size);
    if (e != 0 || fsync(fd) != 0 || rename(tmp, path) != 0 || sync_dir(dir) != 0) {
        say(err, errlen, "cannot allocate", path, e ? e : errno);
        close(fd);
        unlink(tmp);
        return MOAT_ERR_IO;
    }
    st->fd[area] = fd;
    st->size[area] = size;
    return MOAT_OK;
}

moat_status moat_linux_storage_open(moat_linux_storage *st, const char *dir, size_t queue_size,
                                    size_t state_size, char *err, size_t errlen)
{
    for (unsigned a = 0; a < MOAT_AREA_COUNT; a++) {
        st->fd[a] = -1;
        st->size[a] = 0;
    }
    if (!dir || queue_size == 0 || state_size == 0) {
        if (err && errlen)
            snprintf(err, errlen, "storage needs a directory and non-zero sizes");
        return MOAT_ERR_ARG;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        say(err, errlen, "cannot create", dir, errno);
        return MOAT_ERR_IO;
    }
    const size_t sizes[MOAT_AREA_COUNT] = {queue_size, state_size};
    for (unsigned a = 0; a < MOAT_AREA_COUNT; a++) {
        moat_status s = open_area(st, dir, a, sizes[a], err, errlen);
        if (s != MOAT_OK) {
            moat_linux_storage_close(st);
            return s;
        }
    }
    return MOAT_OK;
}

void moat_linux_storage_close(moat_linux_storage *st)
{
    for (unsigned a = 0; a < MOAT_AREA_COUNT; a++) {
        if (st->fd[a] >= 0)
            close(st->fd[a]);
        st->fd[a] = -1;
    }
}

void moat_linux_storage_table(moat_linux_storage *st, moat_storage *out)
{
    out->ctx = st;
    out->size = st_size;
    out->read = st_read;
    out->write = st_write;
    out->sync = st_sync;
}
