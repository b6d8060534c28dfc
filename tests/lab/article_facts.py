"""What the article's lab always holds, shared by the trace tests of every proxy mode."""

CLIENT = "service-test-6ffd9ddbbf-kf4j2"  # 10.0.1.2 on node1
CLIENT_NS = f"default.{CLIENT}"
SERVICE = "10.3.241.152:80"
ENDPOINTS = {"10.0.1.2:8080": "default.service-test-6ffd9ddbbf-kf4j2",
             "10.0.2.2:8080": "default.service-test-6ffd9ddbbf-qs2j6"}
NODEPORT = """\
kind: Service
apiVersion: v1
metadata: {name: service-test-np}
spec:
  type: NodePort
  selector: {app: service_test_pod}
  ports: [{port: 80, targetPort: http, nodePort: 30080}]
"""
