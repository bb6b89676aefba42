from app import create_app, db, tracker

app = create_app()
client = app.test_client()  # a browser without the browser: it keeps cookies

client.get("/?utm_source=newsletter&utm_medium=email&utm_campaign=launch")  # an anonymous visit
client.post("/signup", data={"email": "ada@example.com"})  # sign up, which logs in

with app.app_context():
    for row in db.session.scalars(db.select(tracker.LeadSource)):
        print(row.user_id, row.source, row.medium, row.campaign, row.channel)
