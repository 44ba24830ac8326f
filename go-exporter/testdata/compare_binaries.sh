#!/usr/bin/env bash
# Runs two builds of go-exporter over the same inputs and command lines and
# checks that they agree byte for byte: stdout (and the -o file), stderr and
# the exit status. For a refactor that must not change behaviour:
#
#	go build -trimpath -o /tmp/old-exporter .   # at the old commit
#	go build -trimpath -o /tmp/new-exporter .   # at the new one
#	testdata/compare_binaries.sh /tmp/old-exporter /tmp/new-exporter
#
# Run from go-exporter/ (it needs `go` to write the inputs of the tests'
# export cases and fuzz seeds, and a large file, with TestWriteCorpus). The
# inputs: every *.arrow and *.arrows file under testdata/ and that corpus,
# each also cut short, with single bytes overwritten, and as folders and
# several inputs at once; hostile files (empty, not Arrow, missing); and bad
# command lines. Each input is run with several flag sets. It prints the
# number of runs and any that differ, and exits 1 if one does.
set -euo pipefail

if [ $# -ne 2 ]; then
	echo "usage: testdata/compare_binaries.sh OLD NEW" >&2
	exit 2
fi
old=$(realpath "$1")
new=$(realpath "$2")
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go test -run '^TestWriteCorpus$' -corpus "$work/corpus" . >/dev/null

# hostile variants of a few valid files: cut short, one byte overwritten
mkdir -p "$work/hostile/date=2026-01-04"
: >"$work/hostile/empty.arrow"
printf 'id,text,label\n1,hello,pos\n' >"$work/hostile/csv.arrow"
printf 'ARROW1' >"$work/hostile/magic_only.arrow"
printf '\xff\xff\xff\xff' >"$work/hostile/marker_only.arrows"
k=0
for f in testdata/python/date=2026-01-04/part-00000.arrow testdata/python/date=2026-01-04/part-00001.arrows \
	"$work/corpus/seeds/date=2026-01-04/file_lz4.arrow" "$work/corpus/seeds/date=2026-01-04/stream_zstd.arrow" \
	"$work/corpus/seeds/date=2026-01-04/file_view_dict.arrow" "$work/corpus/seeds/date=2026-01-04/stream_dict_large_list.arrow"; do
	k=$((k + 1))
	ext=${f##*.}
	size=$(stat -c %s "$f")
	for cut in 7 9 64 200 $((size / 2)) $((size - 40)) $((size - 10)) $((size - 1)); do
		head -c "$cut" "$f" >"$work/hostile/date=2026-01-04/f$k-cut$cut.$ext"
	done
	for pos in 8 12 16 24 40 64 100 150 200 300 $((size / 2)) $((size - 30)) $((size - 16)) $((size - 12)) $((size - 8)); do
		for byte in '\xff' '\x00' '\x7f'; do
			out="$work/hostile/date=2026-01-04/f$k-at$pos-${byte:2}.$ext"
			cp "$f" "$out"
			printf "$byte" | dd of="$out" bs=1 seek="$pos" conv=notrunc status=none
		done
	done
done

mapfile -t inputs < <(find testdata "$work/corpus" "$work/hostile" -type f \( -name '*.arrow' -o -name '*.arrows' \) | sort)
all=id,text,label,score,model_version,scored_at,partition,probs
flagsets=(
	""
	"-format json"
	"-fields $all"
	"-format json -fields $all"
	"-fields partition,id,score -workers 1"
	"-fields text,probs,scored_at -workers 3 -max-buffer 4096"
)
# command lines that are not one input with one flag set
extra=(
	""
	"-h"
	"-version"
	"-version -format csv"
	"-fields text,nope testdata/python/polars.arrow"
	"-fields text,text testdata/python/polars.arrow"
	"-fields  testdata/python/polars.arrow"
	"-format csv testdata/python/polars.arrow"
	"-bogus testdata/python/polars.arrow"
	"-workers x testdata/python/polars.arrow"
	"testdata/python/polars.arrow -fields id"
	"testdata/nope.arrow"
	"testdata/python/date=2026-01-04"
	"-format json -fields $all testdata/python/date=2026-01-04 testdata/pipeline/date=2026-02-01"
	"-fields $all testdata/pipeline testdata/pipeline/date=2026-02-01"
	"-format json $work/corpus/cases/folder/preds/date=2026-01-05 $work/hostile/date=2026-01-04/f1-cut200.arrow"
	"-format json $work/corpus/cases/empty_file/preds/date=2026-01-04/part-00000.arrow"
	"-fields $all -o $work/OUT/out.ndjson testdata/pipeline/date=2026-02-01"
	"-format json -o $work/OUT/out.json testdata/python/date=2026-01-04 $work/hostile/csv.arrow"
	"-o $work/OUT/missing/x.ndjson testdata/python/polars.arrow"
	"$work/hostile"
)

# record BIN DIR: runs every command line with BIN, stdout's hash, stderr and
# the status of run n going to DIR/n.{out,err,rc}
record() {
	local bin=$1 dir=$2 n=0 args
	mkdir -p "$dir"
	for flags in "${flagsets[@]}"; do
		for in in "${inputs[@]}"; do
			n=$((n + 1))
			# shellcheck disable=SC2086 # flags are words
			set +e
			"$bin" $flags "$in" 2>"$dir/$n.err" | sha256sum >"$dir/$n.out"
			echo "${PIPESTATUS[0]} $flags $in" >"$dir/$n.rc"
			set -e
		done
	done
	for line in "${extra[@]}"; do
		n=$((n + 1))
		rm -rf "$work/OUT" && mkdir -p "$work/OUT"
		set +e
		# shellcheck disable=SC2086
		"$bin" $line 2>"$dir/$n.err" | sha256sum >"$dir/$n.out"
		echo "${PIPESTATUS[0]} $line" >"$dir/$n.rc"
		set -e
		(cd "$work/OUT" && find . -type f | sort | xargs -r sha256sum) >>"$dir/$n.out"
	done
	echo "$n"
}

n=$(record "$old" "$work/old")
record "$new" "$work/new" >/dev/null
# the temporary file of -o has a random name
sed -i 's/\.tmp-[0-9]*/.tmp-N/g' "$work"/old/*.err "$work"/new/*.err
codes=$(cat "$work/old"/*.rc | cut -d' ' -f1 | sort | uniq -c | awk '{printf " %s: %s", $2, $1}')
if diff -r "$work/old" "$work/new" >"$work/diff"; then
	echo "compare_binaries: $n runs, all the same (stdout, -o file, stderr, exit status); runs by exit status:$codes"
	exit 0
fi
echo "compare_binaries: $n runs, these differ:"
cat "$work/diff"
exit 1
