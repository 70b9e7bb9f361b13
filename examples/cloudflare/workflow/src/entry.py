from urllib.parse import parse_qs, urlparse

from workers import Response, WorkflowEntrypoint, WorkerEntrypoint

class PythonWorkflowStarter(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do('step1')
        async def step_1():
            # does stuff
            print('executing step1')

        @step.do('step2')
        async def step_2():
            # does stuff
            print('executing step2')

        await step_1()
        await step_2()

class Default(WorkerEntrypoint):
    async def fetch(self, request):
        query = parse_qs(urlparse(request.url).query)
        if "instanceId" in query:
            instance = await self.env.MY_WORKFLOW.get(query["instanceId"][0])
            return Response.json({"status": await instance.status()})
        instance = await self.env.MY_WORKFLOW.create()
        return Response.json({"id": instance.id, "details": await instance.status()})
