#!/bin/sh
# A kreg reader with no HDF5 library and no kreg, written from schema/FORMAT.md alone: h5dump,
# jq, sha256sum, dd and openssl, plus POSIX od, sed, awk, grep, wc and tr.
#
# It reads one kernel version from a pack or from a registry directory, checks its content hash
# (section 3) and its record hash (the manifest's record_sha256 in a pack; in a registry, the
# segment's record line must be the object's record attribute byte for byte), and writes the
# values (little-endian, C order) and the record's stored bytes to OUT_DIR as values.bin and
# record.json. It prints one JSON line: ref, dtype, shape, sha256, record_sha256, offset, signer.
# A refusal is one line on stderr and exit status 1.
#
#   plain_reader.sh pack PACK NAME@V OUT_DIR
#   plain_reader.sh registry DIR NAME[@V] OUT_DIR
#
# Not everything section 4 asks of a reader is here (the walk of the whole structure, schema
# validation, the rules beyond JSON Schema): tests/plain_reader.py does those. Values must be
# little-endian (kreg writes them so): a big-endian dataset is refused, not swapped.

set -eu
LC_ALL=C
export LC_ALL

refuse() {
  echo "refused: $*" >&2
  exit 1
}

# -- bytes ------------------------------------------------------------------------------------

byte_at() { # FILE OFFSET -> the byte there, in decimal (empty past the end)
  od -An -tu1 -j "$2" -N 1 "$1" | tr -d ' \n'
}

le_at() { # FILE OFFSET LENGTH -> the little-endian unsigned integer there
  value=0
  scale=1
  for byte in $(od -An -tu1 -j "$2" -N "$3" "$1"); do
    value=$((value + byte * scale))
    scale=$((scale * 256))
  done
  echo "$value"
}

file_size() {
  wc -c <"$1" | tr -d ' '
}

sha256_of() { # FILE -> lowercase hex SHA-256
  sha256sum <"$1" | cut -d ' ' -f 1
}

hex_to_bin() { # HEX -> its bytes on stdout (printf knows octal escapes only)
  hex=$1
  case $hex in
    *[!0-9a-f]*) refuse "'$hex' is not lowercase hex" ;;
  esac
  format=""
  while [ -n "$hex" ]; do
    pair=${hex%"${hex#??}"}
    hex=${hex#??}
    format="$format\\$(printf '%03o' "0x$pair")"
  done
  # shellcheck disable=SC2059 # the format is the bytes, built above from hex digits only
  printf "$format"
}

# -- JSON (section 1: RFC 8259 only) ---------------------------------------------------------

strict_json() { # FILE: one JSON text with no NaN or infinity, which jq 1.6 reads silently
  [ "$(jq -s length "$1" 2>/dev/null)" = 1 ] || refuse "$1: not one JSON text"
  jq -e '[.. | numbers | select(isnan or isinfinite)] == []' "$1" >/dev/null ||
    refuse "$1: NaN or infinity is not JSON"
}

# -- containers (section 1) ------------------------------------------------------------------

check_container() { # FILE: a regular HDF5 file that ends where its superblock says
  [ -f "$1" ] && [ ! -L "$1" ] || refuse "$1: not a regular file"
  [ "$(od -An -tx1 -N 8 "$1" | tr -d ' \n')" = 894844460d0a1a0a ] || refuse "$1: no HDF5 signature at byte 0"
  superblock=$(byte_at "$1" 8)
  case $superblock in
    0) offsets=$(byte_at "$1" 13) base_at=24 ;;
    1) offsets=$(byte_at "$1" 13) base_at=28 ;;
    2 | 3) offsets=$(byte_at "$1" 9) base_at=12 ;;
    *) refuse "$1: superblock version '$superblock'" ;;
  esac
  case $offsets in
    2 | 4 | 8) ;;
    *) refuse "$1: size of offsets '$offsets'" ;;
  esac
  end=$(($(le_at "$1" "$base_at" "$offsets") + $(le_at "$1" $((base_at + 2 * offsets)) "$offsets")))
  [ "$end" -eq "$(file_size "$1")" ] || refuse "$1: its superblock says $end bytes, the file holds $(file_size "$1")"
}

has_root_attribute() { # FILE NAME (the root group's attributes are indented three spaces)
  h5dump -H "$1" 2>/dev/null | grep -q "^   ATTRIBUTE \"$2\" {\$"
}

attribute_bytes() { # FILE PATH OUT: a string attribute's stored bytes
  dump=$(h5dump -e -y -w 0 -a "$2" "$1" 2>/dev/null) || refuse "$1: no attribute $2"
  printf '%s\n' "$dump" | grep -q '^ *STRSIZE H5T_VARIABLE;$' || refuse "$1: $2 is not a variable-length string"
  printf '%s\n' "$dump" | grep -Eq '^ *CSET H5T_CSET_(UTF8|ASCII);$' || refuse "$1: $2 is neither UTF-8 nor ASCII"
  # -e prints the value as a C string literal on the line after DATA {. h5dump's escapes of
  # printable ASCII, tab, newline, CR, backspace and form feed are JSON's, so jq undoes them;
  # an octal escape (any other byte) is no JSON escape: jq fails and the kernel is refused.
  printf '%s\n' "$dump" | awk 'found { sub(/^ */, ""); print; exit } /^ *DATA \{$/ { found = 1 }' >"$3.literal"
  jq -j 'if type == "string" then . else error("not a string") end' "$3.literal" >"$3" 2>/dev/null ||
    refuse "$1: $2 holds bytes outside printable ASCII, which this reader does not undo"
  rm -f "$3.literal"
}

integer_attribute() { # FILE PATH -> its value
  h5dump -y -a "$2" "$1" 2>/dev/null | awk 'found { sub(/^ */, ""); print; exit } /^ *DATA \{$/ { found = 1 }'
}

dataset_storage() { # FILE PATH -> sets datatype, dims (comma-joined), layout, stored, offset
  header=$(h5dump -p -H -d "$2" "$1" 2>/dev/null) || refuse "$1: no dataset $2"
  datatype=$(printf '%s\n' "$header" | sed -n 's/^   DATATYPE  *//p')
  dims=$(printf '%s\n' "$header" | sed -n 's/^   DATASPACE  SIMPLE { ( \([0-9, ]*\) ) \/ .*/\1/p' | tr -d ' ')
  layout=$(printf '%s\n' "$header" | awk 'inside { sub(/^ */, ""); print; exit } /^   STORAGE_LAYOUT \{$/ { inside = 1 }')
  stored=$(printf '%s\n' "$header" | sed -n 's/^      SIZE \([0-9]*\)$/\1/p')
  offset=$(printf '%s\n' "$header" | sed -n 's/^      OFFSET \([0-9]*\)$/\1/p')
  filters=$(printf '%s\n' "$header" | awk 'inside { sub(/^ */, ""); print; exit } /^   FILTERS \{$/ { inside = 1 }')
  [ "$layout" = CONTIGUOUS ] && [ "$filters" = NONE ] && [ -n "$offset" ] && [ -n "$stored" ] ||
    refuse "$1: $2 is not contiguous and unfiltered (layout '$layout', filters '$filters'): read it with HDF5"
}

set_itemsize() { # DTYPE -> sets itemsize, the bytes of one value
  case $1 in
    int8 | uint8) itemsize=1 ;;
    float16 | int16) itemsize=2 ;;
    float32 | int32) itemsize=4 ;;
    float64) itemsize=8 ;;
    *) refuse "dtype '$1'" ;;
  esac
}

check_datatype() { # DTYPE: h5dump's name for the stored type (set by dataset_storage) is its, little-endian
  case "$1:$datatype" in
    "float16:16-bit little-endian floating-point 16-bit precision" | float16:H5T_IEEE_F16LE) ;;
    float32:H5T_IEEE_F32LE | float64:H5T_IEEE_F64LE) ;;
    int8:H5T_STD_I8LE | int16:H5T_STD_I16LE | int32:H5T_STD_I32LE | uint8:H5T_STD_U8LE) ;;
    *) refuse "dtype $1 stored as '$datatype' (little-endian standard types only)" ;;
  esac
}

read_values() { # FILE AT COUNT OUT: COUNT bytes from byte AT, inside the file
  [ $(($2 + $3)) -le "$(file_size "$1")" ] || refuse "$1: values at $2+$3 lie outside the file"
  dd if="$1" of="$4" bs=1 skip="$2" count="$3" 2>/dev/null
  [ "$(file_size "$4")" -eq "$3" ] || refuse "$1: short read of the values"
}

content_hash() { # DTYPE SHAPE_CSV VALUES_FILE (section 3)
  { printf 'kreg-v1:%s:%s\n' "$1" "$2"; cat "$3"; } | sha256sum | cut -d ' ' -f 1
}

record_fields() { # RECORD_FILE -> sets name_r, version_r, dtype, shape_csv, count, sha256_r
  strict_json "$1"
  fields=$(jq -r '[.name, .version, .dtype, (.shape | map(tostring) | join(",")),
                   (.shape | reduce .[] as $n (1; . * $n)), .sha256] | map(tostring) | join(" ")' "$1")
  # shellcheck disable=SC2086 # six space-free fields
  set -- $fields
  name_r=$1 version_r=$2 dtype=$3 shape_csv=$4 count=$5 sha256_r=$6
}

values_from_dataset() { # FILE DATASET OUT: the kernel's values where h5dump -p -H says they are
  dataset_storage "$1" "$2"
  check_datatype "$dtype"
  [ "$dims" = "$shape_csv" ] || refuse "$1: $2 has shape $dims, its record says $shape_csv"
  set_itemsize "$dtype"
  [ "$stored" -eq $((itemsize * count)) ] || refuse "$1: $2 stores $stored bytes for $((itemsize * count))"
  read_values "$1" "$offset" "$stored" "$3"
}

# -- a pack (section 4) ----------------------------------------------------------------------

read_pack() { # PACK NAME@V OUT
  pack=$1 ref=$2 out=$3
  check_container "$pack"
  attribute_bytes "$pack" /kreg_format "$out/kreg_format"
  attribute_bytes "$pack" /kind "$out/kind"
  [ "$(cat "$out/kreg_format")" = kreg ] && [ "$(cat "$out/kind")" = pack ] || refuse "$pack: not a kreg pack"
  [ "$(integer_attribute "$pack" /format_version)" = 1 ] || refuse "$pack: not container format 1"

  # The manifest: the /manifest uint8 dataset's bytes, read at its offset; digest over them.
  dataset_storage "$pack" /manifest
  [ "$datatype" = H5T_STD_U8LE ] && [ "$dims" = "$stored" ] || refuse "$pack: /manifest is not 1-D uint8"
  read_values "$pack" "$offset" "$stored" "$out/manifest.json"
  attribute_bytes "$pack" /digest "$out/digest"
  [ "$(sha256_of "$out/manifest.json")" = "$(cat "$out/digest")" ] || refuse "$pack: digest"
  strict_json "$out/manifest.json"
  jq -e '.format == "kreg-pack" and .version == 2' "$out/manifest.json" >/dev/null || refuse "$pack: not a version 2 manifest"

  signer=null
  public_key=$(jq -r '.public_key // ""' "$out/manifest.json")
  if has_root_attribute "$pack" signature || [ -n "$public_key" ]; then
    [ -n "$public_key" ] || refuse "$pack: a signature without a public_key"
    attribute_bytes "$pack" /signature "$out/signature"
    # an ed25519 public key in DER: the SubjectPublicKeyInfo prefix, then the 32 key bytes
    hex_to_bin "302a300506032b6570032100$public_key" >"$out/public_key.der"
    hex_to_bin "$(cat "$out/signature")" >"$out/signature.bin"
    openssl pkeyutl -verify -pubin -keyform DER -inkey "$out/public_key.der" -rawin \
      -in "$out/manifest.json" -sigfile "$out/signature.bin" >/dev/null 2>&1 || refuse "$pack: the signature does not verify"
    signer="\"$public_key\""
  fi

  jq -c --arg ref "$ref" '[.kernels[] | select(.ref == $ref)]' "$out/manifest.json" >"$out/entry.json"
  [ "$(jq length "$out/entry.json")" = 1 ] || refuse "$pack: the manifest lists $ref $(jq length "$out/entry.json") times"
  name=${ref%@*} version=${ref##*@}
  attribute_bytes "$pack" "/kernels/$name/@$version/record" "$out/record.json"
  record_sha256=$(sha256_of "$out/record.json")
  [ "$record_sha256" = "$(jq -r '.[0].record_sha256' "$out/entry.json")" ] || refuse "$pack: record_sha256 of $ref"
  record_fields "$out/record.json"
  [ "$name_r@$version_r" = "$ref" ] || refuse "$pack: the record at $ref is $name_r@$version_r's"
  values_from_dataset "$pack" "/kernels/$name/@$version" "$out/values.bin"
  sha256=$(content_hash "$dtype" "$shape_csv" "$out/values.bin")
  [ "$sha256" = "$sha256_r" ] && [ "$sha256" = "$(jq -r '.[0].sha256' "$out/entry.json")" ] || refuse "$pack: content hash of $ref"
  at=$offset
}

# -- a registry directory (section 5) --------------------------------------------------------

name_bits() { # NAME -> the first 24 bits of SHA-256(UTF-8 name), most significant first
  digits=$(printf '%s' "$1" | sha256sum | cut -c 1-6)
  while [ -n "$digits" ]; do
    digit=${digits%"${digits#?}"}
    digits=${digits#?}
    case $digit in
      0) printf 0000 ;; 1) printf 0001 ;; 2) printf 0010 ;; 3) printf 0011 ;;
      4) printf 0100 ;; 5) printf 0101 ;; 6) printf 0110 ;; 7) printf 0111 ;;
      8) printf 1000 ;; 9) printf 1001 ;; a) printf 1010 ;; b) printf 1011 ;;
      c) printf 1100 ;; d) printf 1101 ;; e) printf 1110 ;; f) printf 1111 ;;
    esac
  done
}

read_registry() { # DIR NAME[@V] OUT
  top=$1 out=$3
  strict_json "$top/kreg-registry.json"
  jq -e '.format == "kreg-registry" and .version == 2' "$top/kreg-registry.json" >/dev/null || refuse "$top: not a format-2 registry"
  strict_json "$top/index.json"
  jq -e '.format == "kreg-registry-index" and .version == 2 and (.generation | type) == "string"' "$top/index.json" \
    >/dev/null || refuse "$top: not a version 2 root"
  case $2 in
    *@*) name=${2%@*} version=${2##*@} ;;
    *) name=$2 version="" ;;
  esac
  case $version in
    *[!0-9]*) refuse "version '$version'" ;;
  esac

  # The segment whose prefix starts the bits of SHA-256(name): exactly one, prefixes being prefix-free.
  bits=$(name_bits "$name")
  keys=$(jq -r --arg bits "$bits" '[.segments | to_entries[] | select(.key as $p | $bits | startswith($p)) | .value]
                                   | if length == 1 then .[0] else error("not one segment") end' "$top/index.json") ||
    refuse "$top: the root names not one segment for $name"
  case $keys in
    index/????????????????????????????????.json) ;;
    *) refuse "$top: segment key '$keys'" ;;
  esac
  segment=$top/$keys

  # Its parts: the listing block, the header (the first line that starts with {), a record line per row.
  header_line=$(grep -n '^{' "$segment" | head -n 1 | cut -d : -f 1)
  [ -n "$header_line" ] || refuse "$segment: no header line"
  sed -n "${header_line}p" "$segment" >"$out/header.json"
  strict_json "$out/header.json"
  if [ -z "$version" ]; then
    version=$(jq --arg n "$name" '[.rows[] | select(.[0] == $n) | .[1]] | max' "$out/header.json")
  fi
  row_index=$(jq --arg n "$name" --argjson v "${version:-null}" \
    '[.rows | to_entries[] | select(.value[0] == $n and .value[1] == $v) | .key] | if length == 1 then .[0] else empty end' \
    "$out/header.json")
  [ -n "$row_index" ] || refuse "$top: no single row for $name@$version"
  jq -c ".rows[$row_index]" "$out/header.json" >"$out/row.json"
  sed -n "$((header_line + 1 + row_index))p" "$segment" | tr -d '\n' >"$out/record.json"
  record_fields "$out/record.json"
  [ "$name_r@$version_r" = "$name@$version" ] || refuse "$segment: row $row_index holds $name_r@$version_r's record"

  # The row is what its record says: [name, version, shape, dtype, layout, origin, summary, tags, sha256, offset].
  jq -e --slurpfile r "$out/record.json" '$r[0] as $r | .[0] == $r.name and .[1] == $r.version and .[2] == $r.shape
      and .[3] == $r.dtype and .[4] == $r.layout and .[5] == $r.provenance.origin and .[7] == ($r.tags // [])
      and .[8] == $r.sha256 and length == 10' "$out/row.json" >/dev/null || refuse "$segment: the row of $name@$version"

  # The listing block's entry for the name (its latest version), if the segment has a block.
  if [ "$header_line" -gt 1 ]; then
    latest=$(jq --arg n "$name" '[.rows[] | select(.[0] == $n) | .[1]] | max' "$out/header.json")
    head -n $((header_line - 1)) "$segment" | awk -F '\t' -v n="$name" '$2 == n' >"$out/entry.txt"
    [ "$(wc -l <"$out/entry.txt" | tr -d ' ')" = 1 ] || refuse "$segment: not one listing entry for $name"
    [ "$(cut -f 3 "$out/entry.txt")" = "$latest" ] || refuse "$segment: the listing entry of $name is not its latest version"
    if [ "$latest" = "$version" ]; then
      # the row's JSON [3,3] and ["a","b"] are the entry's 3x3 and a,b
      expected=$(jq -r '[(.[2] | map(tostring) | join("x")), .[3], .[4], .[5], (.[7] | join(",")), .[8]] | join("\t")' "$out/row.json")
      [ "$(cut -f 4,5,6,7,9,10 "$out/entry.txt")" = "$expected" ] || refuse "$segment: the listing entry of $name is not its row"
    fi
  fi

  # The object: its own record attribute is the segment's record line, byte for byte; the values
  # are at the row's offset, read with no HDF5 at all, or, for a null offset, where h5dump says.
  object=$top/kernels/$name/@$version.h5
  check_container "$object"
  attribute_bytes "$object" "/kernels/$name/@$version/record" "$out/object-record.json"
  cmp -s "$out/object-record.json" "$out/record.json" || refuse "$object: its record is not the segment's"
  at=$(jq -r '.[9] // ""' "$out/row.json")
  case $at in
    "") values_from_dataset "$object" "/kernels/$name/@$version" "$out/values.bin"
        at=$offset ;;
    *[!0-9]*) refuse "$segment: offset '$at'" ;;
    *) set_itemsize "$dtype"
       read_values "$object" "$at" $((itemsize * count)) "$out/values.bin" ;;
  esac
  sha256=$(content_hash "$dtype" "$shape_csv" "$out/values.bin")
  [ "$sha256" = "$sha256_r" ] && [ "$sha256" = "$(jq -r '.[8]' "$out/row.json")" ] || refuse "$object: content hash of $name@$version"
  record_sha256=$(sha256_of "$out/record.json")
  signer=null
}

[ $# -eq 4 ] || {
  echo "usage: $0 pack PACK NAME@V OUT_DIR | registry DIR NAME[@V] OUT_DIR" >&2
  exit 2
}
mkdir -p "$4"
case $1 in
  pack) read_pack "$2" "$3" "$4" ;;
  registry) read_registry "$2" "$3" "$4" ;;
  *) refuse "unknown kind '$1'" ;;
esac
jq -n -c --arg ref "$name_r@$version_r" --arg dtype "$dtype" --arg shape "$shape_csv" --arg sha256 "$sha256" \
  --arg record_sha256 "$record_sha256" --argjson offset "$at" --argjson signer "$signer" \
  '{ref: $ref, dtype: $dtype, shape: ($shape | split(",") | map(tonumber)), sha256: $sha256,
    record_sha256: $record_sha256, offset: $offset, signer: $signer}'
