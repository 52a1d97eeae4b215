"""What the peer scripts share; imported from their own folder, inside the peers' virtual environments."""


def memory_mb(field: str) -> float:
    """A memory line of this process's /proc status in MB: ``VmRSS`` (resident now) or ``VmHWM`` (the peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM), in MB."""
    return memory_mb("VmHWM")
