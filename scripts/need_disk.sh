# Sourced by the setup scripts: need_disk NAME VENV GB fails at once, in one line, when the disk that will hold VENV
# has less than GB free. An installed venv takes a few GB; a full disk would otherwise fail half-way through pip
# with ENOSPC (a CI run on a shared disk did).
need_disk() {
  local name=$1 venv=$2 gb=$3 disk have_kb
  disk=$(realpath -m "$venv")
  while [ ! -d "$disk" ]; do disk=$(dirname "$disk"); done
  have_kb=$(df -Pk "$disk" | awk 'NR==2 {print $4}')
  if [ "$have_kb" -lt $((gb * 1024 * 1024)) ]; then
    echo "$name: $venv needs $gb GB free on its disk, $((have_kb / 1024 / 1024)) GB are free; free some space and rerun" >&2
    exit 1
  fi
}
