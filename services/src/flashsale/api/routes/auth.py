"""Register and log in (a convenience for people trying the API by hand; load tests mint tokens)."""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter
from starlette.responses import Response

from flashsale import errors
from flashsale.adapters.pg import User
from flashsale.adapters.tokens import mint
from flashsale.api.deps import RateLimit, ServicesDep
from flashsale.api.schemas import Login, Register, Registered, TokenOut, UserOut, problem_responses
from flashsale.domain.users import hash_password, new_user_id, verify_password

router = APIRouter(prefix="/v1/auth", tags=["auth"], dependencies=[RateLimit])

# Compared against when the email is unknown, so a login takes as long either way.
_DUMMY_HASH = hash_password("not-a-real-password", salt=b"\0" * 16)


@router.post(
    "/register",
    status_code=201,
    response_model=Registered,
    responses=problem_responses(409, 422, 429, 503),
)
async def register(body: Register, services: ServicesDep) -> Response:
    password_hash = await asyncio.to_thread(hash_password, body.password)
    user = User(
        user_id=new_user_id(), email=body.email, name=body.name, password_hash=password_hash
    )
    await services.pg.create_user(user)
    token = mint(services.settings.auth, user_id=user.user_id)
    out = Registered(
        user=UserOut(user_id=user.user_id, email=user.email, name=user.name), token=token
    )
    return Response(orjson.dumps(out.model_dump()), status_code=201, media_type="application/json")


@router.post("/login", response_model=TokenOut, responses=problem_responses(401, 422, 429, 503))
async def login(body: Login, services: ServicesDep) -> TokenOut:
    user = await services.pg.user_by_email(body.email)
    stored = user.password_hash if user else _DUMMY_HASH
    ok = await asyncio.to_thread(verify_password, body.password, stored)
    if user is None or not ok:
        raise errors.InvalidCredentials()
    return TokenOut(token=mint(services.settings.auth, user_id=user.user_id))
