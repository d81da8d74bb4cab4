#!/usr/bin/env bash
# Prose logs nobody on the project wrote, held out from the miner's rules (they were written
# before this script was; 2026-12-05), for `cargo bench --bench logs` (it reads
# target/logs-bench/outside/*.csv). Two Python systems at DEBUG level, through Python's logging:
# - `aiosmtpd`: a real SMTP server (PyPI's aiosmtpd) under clients that send mail, to several
#   recipients, with bad commands, bad addresses, resets, VRFY, HELP, NOOP, unknown verbs, an
#   AUTH it does not offer, data too large and connections dropped mid-session;
# - `botocore`: the AWS SDK (boto3, botocore, urllib3's retries) talking to moto's in-process AWS
#   (S3, SQS, DynamoDB, IAM, STS), with requests that succeed and that fail (missing buckets,
#   queues and tables, conflicting names, bad parameters).
# Each record is labelled by its logger and its format string (`%r << %r`: the program's own event,
# as LogHub's templates and PostgreSQL's message catalogues are; a call site would not do, since
# a program may log through a wrapper of its own) and its Content is the message as formatted.
# Records of more than one line (botocore's response bodies) are left out: a line-based log has
# no label for their later lines. A fixed-seed sample of 2,000 records of each is written as
# Content,EventId.
# Usage: scripts/outside-logs/python.sh [OUT_DIR]   (default target/logs-bench/outside)
set -euo pipefail
OUT=${1:-$(dirname "$0")/../../target/logs-bench/outside}
mkdir -p "$OUT"
PYTHONPATH="$(dirname "$0")" python3 - "$OUT" <<'PY'
import logging, os, smtplib, sys, time
import sample
out = sys.argv[1]
records = {'aiosmtpd': [], 'botocore': []}
current = ['aiosmtpd']

class Keep(logging.Handler):
    def emit(self, r):
        try:
            msg = r.getMessage()
        except Exception:
            return
        if '\n' in msg.strip() or not msg.strip():
            return
        # The event: the format string the program gave the logger (a wrapper's call site, as
        # aiosmtpd's `_sanitized_log`, is not one).
        records[current[0]].append((msg.strip(), f'{r.name}: {r.msg}'))

root = logging.getLogger()
root.setLevel(logging.DEBUG)
root.addHandler(Keep())

# --- aiosmtpd ---
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink
class Handler(Sink):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith('@nowhere.test'):
            return '550 5.1.1 no such user here'
        envelope.rcpt_tos.append(address)
        return '250 OK'
ctl = Controller(Handler(), hostname='127.0.0.1', port=42525, data_size_limit=20000)
ctl.start()
def session(k):
    try:
        s = smtplib.SMTP('127.0.0.1', 42525, timeout=5)
        choice = k % 9
        if choice == 0:
            s.sendmail(f'alice{k}@example.test', [f'bob{k}@example.test', f'carol{k}@example.test'], f'Subject: hello {k}\r\n\r\nbody {k}\r\n')
        elif choice == 1:
            s.helo(f'client{k}.example.test'); s.docmd('MAIL FROM:<broken'); s.docmd('RCPT TO:<x@example.test>')
        elif choice == 2:
            s.ehlo(); s.docmd('VRFY', f'user{k}'); s.docmd('HELP'); s.docmd('NOOP'); s.docmd('RSET')
        elif choice == 3:
            s.ehlo(); s.docmd('FROBNICATE', 'now'); s.docmd('AUTH', 'PLAIN dGVzdAB0ZXN0AHRlc3Q=')
        elif choice == 4:
            try:
                s.sendmail(f'dave{k}@example.test', [f'ghost{k}@nowhere.test'], 'Subject: x\r\n\r\ny\r\n')
            except smtplib.SMTPException:
                pass
        elif choice == 5:
            try:
                s.sendmail(f'eve{k}@example.test', [f'frank{k}@example.test'], 'Subject: big\r\n\r\n' + 'x' * 30000 + '\r\n')
            except smtplib.SMTPException:
                pass
        elif choice == 6:
            s.ehlo(); s.docmd('MAIL FROM:<a@example.test>'); s.docmd('MAIL FROM:<b@example.test>'); s.docmd('DATA')
        elif choice == 7:
            s.ehlo(); s.sock.close(); return
        else:
            s.ehlo(); s.docmd('STARTTLS'); s.docmd('RCPT TO:<nobody@example.test>')
        s.quit()
    except (smtplib.SMTPException, OSError):
        pass
for k in range(420):
    session(k)
time.sleep(0.5)
ctl.stop()

# --- botocore against moto ---
current[0] = 'botocore'
os.environ.update(AWS_ACCESS_KEY_ID='testing', AWS_SECRET_ACCESS_KEY='testing', AWS_DEFAULT_REGION='us-east-1')
import boto3, botocore.exceptions
from moto import mock_aws
with mock_aws():
    s3, sqs, ddb, iam, sts = (boto3.client(n, region_name='us-east-1') for n in ('s3', 'sqs', 'dynamodb', 'iam', 'sts'))
    def attempt(f, *a, **kw):
        try:
            return f(*a, **kw)
        except (botocore.exceptions.ClientError, botocore.exceptions.ParamValidationError):
            return None
    for k in range(40):
        attempt(s3.create_bucket, Bucket=f'bucket-{k % 7}')
        attempt(s3.put_object, Bucket=f'bucket-{k % 7}', Key=f'k/{k}', Body=b'x' * (k * 10))
        attempt(s3.get_object, Bucket=f'bucket-{k % 9}', Key=f'k/{k}')
        attempt(s3.list_objects_v2, Bucket=f'bucket-{k % 8}', Prefix='k/')
        attempt(s3.delete_object, Bucket=f'bucket-{k % 7}', Key=f'k/{k - 1}')
        q = attempt(sqs.create_queue, QueueName=f'queue-{k % 5}')
        if q:
            attempt(sqs.send_message, QueueUrl=q['QueueUrl'], MessageBody=f'message {k}')
            attempt(sqs.receive_message, QueueUrl=q['QueueUrl'], MaxNumberOfMessages=2)
        attempt(sqs.get_queue_url, QueueName=f'missing-{k}')
        attempt(ddb.create_table, TableName=f'table-{k % 4}', KeySchema=[{'AttributeName': 'id', 'KeyType': 'HASH'}],
                AttributeDefinitions=[{'AttributeName': 'id', 'AttributeType': 'S'}], BillingMode='PAY_PER_REQUEST')
        attempt(ddb.put_item, TableName=f'table-{k % 6}', Item={'id': {'S': f'item-{k}'}, 'n': {'N': str(k)}})
        attempt(ddb.get_item, TableName=f'table-{k % 4}', Key={'id': {'S': f'item-{k}'}})
        attempt(iam.create_user, UserName=f'user-{k % 10}')
        attempt(iam.get_user, UserName=f'nobody-{k}')
        attempt(sts.get_caller_identity)
        attempt(s3.create_bucket, Bucket='Bad_Name!')
for name, recs in records.items():
    sample.write(recs, os.path.join(out, f'{name}.csv'), 'format strings')
PY
