/*
 * ramshim: preloaded (LD_PRELOAD) into the QEMU of a VM restored from a
 * template, so that memory its guest frees goes back to the host without
 * touching the template.
 *
 * A restored VM's RAM is a private copy-on-write mapping of the template's
 * memory file (memory-backend-file,share=off). When the guest reports free
 * pages (virtio-balloon free-page-reporting), QEMU 7.2 discards them in
 * ram_block_discard_range(): fallocate(FALLOC_FL_PUNCH_HOLE) on the file,
 * then madvise(MADV_DONTNEED) on the mapping. The hole would zero those
 * pages in the template itself, under every other VM mapping it; the
 * madvise alone is what frees this VM's private copies (the pages then
 * read the template's contents again, shared in the page cache). So a
 * punch on the file named by VCH_TEMPLATE_RAM (identified by device and
 * inode when the library loads, before QEMU opens it) succeeds without
 * acting; every other fallocate, on disks and anything else, is passed on.
 *
 * Loading fails (QEMU exits, the daemon boots the VM cold) if
 * VCH_TEMPLATE_RAM is set but cannot be stat'ed: then no punch could be
 * told apart.
 *
 * With VCH_MEMORY_MERGE=1 it also marks the whole process's memory
 * mergeable (prctl PR_SET_MEMORY_MERGE, Linux 6.4): where the host runs
 * KSM, pages equal across VMs (guest RAM each one wrote alike, QEMU's
 * heap and TCG's tables) are shared. QEMU alone marks only guest RAM
 * (mem-merge). A kernel without it gets a warning on stderr, not a failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#endif

static dev_t ram_dev;
static ino_t ram_ino;
static int ram_known;

__attribute__((constructor)) static void ramshim_init(void)
{
	const char *path = getenv("VCH_TEMPLATE_RAM");
	const char *merge = getenv("VCH_MEMORY_MERGE");
	struct stat st;

	if (merge != NULL && strcmp(merge, "1") == 0 &&
	    prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) != 0)
		fprintf(stderr, "ramshim: PR_SET_MEMORY_MERGE: %s: memory not merged\n", strerror(errno));
	if (path == NULL || *path == '\0')
		return;
	if (stat(path, &st) != 0) {
		fprintf(stderr, "ramshim: template RAM %s: cannot stat\n", path);
		_exit(1);
	}
	ram_dev = st.st_dev;
	ram_ino = st.st_ino;
	ram_known = 1;
}

static int is_template_ram(int fd)
{
	struct stat st;

	return ram_known && fstat(fd, &st) == 0 && st.st_dev == ram_dev &&
	       st.st_ino == ram_ino;
}

int fallocate64(int fd, int mode, off_t offset, off_t len)
{
	if ((mode & FALLOC_FL_PUNCH_HOLE) && is_template_ram(fd))
		return 0;
	return (int)syscall(SYS_fallocate, fd, mode, offset, len);
}

int fallocate(int fd, int mode, off_t offset, off_t len)
{
	return fallocate64(fd, mode, offset, len);
}
