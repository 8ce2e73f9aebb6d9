#!/usr/bin/env bash
# How tests/files/ and bench/files/ were made: real files from real producers (the result is committed, so
# that tests and CI need none of these programs). Run as root on Debian 12:
#   apt-get install libreoffice-writer-nogui poppler-utils shared-mime-info; bash scripts/make_test_files.sh
# - routine-vacuuming.docx, backup-dump.docx: LibreOffice 7.4 converting two pages of the
#   PostgreSQL 15 manual (postgresql-doc-15) from HTML to Word
# - routine-vacuuming.pdf: LibreOffice exporting that DOCX to PDF (10 pages, with bookmarks)
# - backup-dump-encrypted.pdf: LibreOffice exporting backup-dump.docx with an open password
# - scanned-page.pdf: page 3 of the PDF rasterised by poppler (pdftoppm), saved as a PDF by
#   Pillow: an image and no text layer, as a scanner makes
# - shared-mime-info-spec.pdf: the PDF Debian ships in shared-mime-info (DocBook, 17 pages)
# - bench/files/*.pdf: five more manual pages, HTML -> DOCX -> PDF by LibreOffice (39 pages),
#   the PDF ingest benchmark's set with the two PDFs above
set -euo pipefail
out=$(cd "$(dirname "$0")/.." && pwd)/tests/files
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
cp /usr/share/doc/postgresql-doc-15/html/{routine-vacuuming,backup-dump}.html .
soffice --headless --convert-to 'docx:MS Word 2007 XML' routine-vacuuming.html backup-dump.html
soffice --headless --convert-to pdf:writer_pdf_Export routine-vacuuming.docx
soffice --headless --outdir enc --convert-to 'pdf:writer_pdf_Export:{"EncryptFile":{"type":"boolean","value":"true"},"DocumentOpenPassword":{"type":"string","value":"s3cret"}}' backup-dump.docx
pdftoppm -f 3 -l 3 -r 60 -png routine-vacuuming.pdf scan
python3 -c "from PIL import Image; Image.open('scan-03.png').convert('RGB').save('scanned-page.pdf', resolution=60)"
mkdir -p "$out"
cp routine-vacuuming.docx backup-dump.docx routine-vacuuming.pdf scanned-page.pdf "$out/"
cp enc/backup-dump.pdf "$out/backup-dump-encrypted.pdf"
cp /usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf "$out/"
bench=$out/../../bench/files
mkdir -p "$bench"
for p in sql-createtable runtime-config-query mvcc-intro indexes-types wal-configuration; do
  cp "/usr/share/doc/postgresql-doc-15/html/$p.html" .
  soffice --headless --convert-to 'docx:MS Word 2007 XML' "$p.html"
  soffice --headless --convert-to pdf:writer_pdf_Export "$p.docx"
  cp "$p.pdf" "$bench/"
done
ls -l "$out" "$bench"
